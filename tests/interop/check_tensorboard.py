# Reads the runs tests/test_log.lua ("interop: ...") wrote with TensorBoard's own readers and
# checks every scalar, image, histogram, text and hparams entry against manifest.json: the
# event accumulator (what `tensorboard --logdir` loads), the data provider the web UI asks, and
# the HParams plugin's session-group table. Exits 1 on any mismatch.
#   python check_tensorboard.py ROOT
import io
import json
import math
import sys

import numpy as np
from PIL import Image
from tensorboard import context
from tensorboard.backend.event_processing import data_provider as dp
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

root = sys.argv[1]
manifest = json.load(open(f"{root}/manifest.json"))
failures = []
checked = 0


def check(cond, what):
    global checked
    checked += 1
    if not cond:
        failures.append(what)


def num(v):
    return float({"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}.get(v, v)) if isinstance(v, str) else float(v)


def same(a, b):
    a, b = float(a), float(b)
    if math.isnan(b):
        return math.isnan(a)
    return a == b or math.isclose(a, b, rel_tol=1e-6)  # simple_value is a float32


for run, m in sorted(manifest["runs"].items()):
    acc = ea.EventAccumulator(f"{root}/{run}", size_guidance={ea.SCALARS: 0, ea.IMAGES: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0})
    acc.Reload()
    tags = acc.Tags()
    for tag, want in m["scalars"].items():
        got = acc.Scalars(tag)
        check(len(got) == len(want), f"{run} scalar {tag}: {len(got)} events, want {len(want)}")
        for g, (step, v) in zip(got, want):
            check(g.step == step and same(g.value, num(v)), f"{run} scalar {tag}: got ({g.step}, {g.value}), want ({step}, {v})")
    for tag, want in m["images"].items():
        got = acc.Images(tag)
        check(len(got) == len(want), f"{run} image {tag}: {len(got)} events")
        for g, w in zip(got, want):
            px = np.asarray(Image.open(io.BytesIO(g.encoded_image_string)))
            if px.ndim == 2:
                px = px[:, :, None]
            check(g.step == w["step"] and g.width == w["width"] and g.height == w["height"],
                  f"{run} image {tag}: step/size {g.step} {g.width}x{g.height}")
            check(px.shape == (w["height"], w["width"], w["channels"]), f"{run} image {tag}: decoded shape {px.shape}")
            check(px.reshape(-1).tolist() == w["pixels"], f"{run} image {tag}: pixels differ")
    for tag, want in m["histograms"].items():
        got = acc.Histograms(tag)
        check(len(got) == len(want), f"{run} histogram {tag}: {len(got)} events")
        for g, w in zip(got, want):
            h = g.histogram_value
            check(g.step == w["step"], f"{run} histogram {tag}: step {g.step}")
            for k in ("min", "max", "num", "sum", "sum_squares"):
                check(getattr(h, k) == w[k], f"{run} histogram {tag}: {k} {getattr(h, k)} != {w[k]}")
            check(list(h.bucket_limit) == w["bucket_limit"], f"{run} histogram {tag}: bucket_limit")
            check(list(h.bucket) == w["bucket"], f"{run} histogram {tag}: bucket")
    for tag, want in m["texts"].items():
        got = acc.Tensors(tag)
        check(len(got) == len(want), f"{run} text {tag}: {len(got)} events")
        for g, w in zip(got, want):
            text = g.tensor_proto.string_val[0].decode("utf-8")
            check(g.step == w["step"] and text == w["text"], f"{run} text {tag}: got ({g.step}, {text!r})")
    content = acc.PluginTagToContent("hparams")
    check(sorted(content) == ["_hparams_/experiment", "_hparams_/session_end_info", "_hparams_/session_start_info"],
          f"{run}: hparams tags {sorted(content)}")

# what the web UI reads: the data provider over a multiplexer of every run
mux = pem.EventMultiplexer()
mux.AddRunsFromDirectory(root)
mux.Reload()
provider = dp.MultiplexerDataProvider(mux, root)
ctx = context.RequestContext()
scalars = provider.read_scalars(ctx, experiment_id="", plugin_name="scalars", downsample=10000)
for run, m in manifest["runs"].items():
    for tag, want in m["scalars"].items():
        got = scalars.get(run, {}).get(tag, [])
        check([d.step for d in got] == [s for s, _ in want], f"data provider {run}/{tag}: steps")
        check(all(same(d.value, num(v)) for d, (_, v) in zip(got, want)), f"data provider {run}/{tag}: values")
    images = provider.list_blob_sequences(ctx, experiment_id="", plugin_name="images").get(run, {})
    check(sorted(images) == sorted(m["images"]), f"data provider {run}: image tags {sorted(images)}")
    hists = provider.list_tensors(ctx, experiment_id="", plugin_name="histograms").get(run, {})
    check(sorted(hists) == sorted(m["histograms"]), f"data provider {run}: histogram tags {sorted(hists)}")
    texts = provider.list_tensors(ctx, experiment_id="", plugin_name="text").get(run, {})
    check(sorted(texts) == sorted(m["texts"]), f"data provider {run}: text tags {sorted(texts)}")

# the HParams tab: one session per run with its values and metric, sortable by the metric
tb = base_plugin.TBContext(logdir=root, data_provider=provider, multiplexer=mux)
request = api_pb2.ListSessionGroupsRequest(
    start_index=0, slice_size=100,
    allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING],
    col_params=[api_pb2.ColParams(metric=api_pb2.MetricName(tag="eval/acc"), order=api_pb2.ORDER_DESC)])
response = list_session_groups.Handler(ctx, backend_context.Context(tb), "", request).run()
groups = list(response.session_groups)
check(len(groups) == len(manifest["runs"]), f"hparams: {len(groups)} session groups")
accs = []
for g in groups:
    run = g.sessions[0].name
    m = manifest["runs"].get(run)
    if m is None:
        check(False, f"hparams: unexpected session {run}")
        continue
    for k, v in m["hparams"].items():
        got = g.hparams[k]
        val = got.bool_value if isinstance(v, bool) else got.string_value if isinstance(v, str) else got.number_value
        check(val == v, f"hparams {run}: {k} = {val!r}, want {v!r}")
    mv = {mv.name.tag: mv.value for mv in g.metric_values}
    check(same(mv.get("eval/acc", float("nan")), m["metrics"]["eval/acc"]), f"hparams {run}: eval/acc {mv}")
    check(g.sessions[0].status == api_pb2.STATUS_SUCCESS, f"hparams {run}: status {g.sessions[0].status}")
    accs.append(mv.get("eval/acc"))
check(accs == sorted(accs, reverse=True), f"hparams: not sorted by eval/acc descending: {accs}")

if failures:
    print("\n".join("FAIL " + f for f in failures))
    print(f"tensorboard interop: {len(failures)} of {checked} checks failed")
    sys.exit(1)
print(f"tensorboard interop: {checked} checks passed ({len(manifest['runs'])} runs)")
