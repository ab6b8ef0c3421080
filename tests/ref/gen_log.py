# Writes tests/ref/log_events/events.out.tfevents.fixture with TensorBoard's own writer and
# protos (no TensorFlow), and tests/ref/log_ref.lua with what each event holds, so
# tests/test_log.lua checks tocha's event decoder (and its CRC32C) against an independent writer.
# Run by hand: python3 -m venv /tmp/tocha-tb-venv && /tmp/tocha-tb-venv/bin/pip install tensorboard
#   /tmp/tocha-tb-venv/bin/python tests/ref/gen_log.py
import glob
import io
import math
import os
import shutil
import tempfile

from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.plugins.scalar import summary_v2 as scalar
from tensorboard.plugins.text import summary_v2 as text
from tensorboard.summary.writer.event_file_writer import EventFileWriter

here = os.path.dirname(os.path.abspath(__file__))
tmp = tempfile.mkdtemp()
w = EventFileWriter(tmp)
WALL = 1700000000.5


def value_event(step, value):
    w.add_event(event_pb2.Event(wall_time=WALL + step, step=step, summary=summary_pb2.Summary(value=[value])))


def summary_event(step, summary):
    w.add_event(event_pb2.Event(wall_time=WALL + step, step=step, summary=summary))


value_event(1, summary_pb2.Summary.Value(tag="loss", simple_value=0.5))
value_event(2, summary_pb2.Summary.Value(tag="loss", simple_value=0.25))
value_event(3, summary_pb2.Summary.Value(tag="loss", simple_value=float("nan")))
summary_event(5, scalar.scalar_pb("acc", 0.75))

pixels = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30), (40, 50, 60), (70, 80, 90)]
img = Image.new("RGB", (3, 2))
img.putdata(pixels)
png = io.BytesIO()
img.save(png, format="PNG")
value_event(7, summary_pb2.Summary.Value(tag="samples", image=summary_pb2.Summary.Image(
    height=2, width=3, colorspace=3, encoded_image_string=png.getvalue())))

value_event(9, summary_pb2.Summary.Value(tag="weights", histo=summary_pb2.HistogramProto(
    min=-1.0, max=2.0, num=6, sum=3.5, sum_squares=7.25, bucket_limit=[0.0, 1.0, 2.0], bucket=[2, 3, 1])))
summary_event(11, text.text_pb("note", "hello *tocha*"))

summary_event(0, hp.hparams_config_pb(
    hparams=[hp.HParam("lr", hp.RealInterval(1e-4, 1.0)), hp.HParam("opt", hp.Discrete(["adam", "sgd"])),
             hp.HParam("ema", hp.Discrete([True, False]))],
    metrics=[hp.Metric("eval/acc")]))
summary_event(0, hp.hparams_pb({"lr": 0.01, "opt": "adam", "ema": True}, start_time_secs=WALL))
w.close()

out = os.path.join(here, "log_events")
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
shutil.move(glob.glob(os.path.join(tmp, "events.out.tfevents.*"))[0], os.path.join(out, "events.out.tfevents.fixture"))
shutil.rmtree(tmp)

flat = [c for p in pixels for c in p]
with open(os.path.join(here, "log_ref.lua"), "w") as f:
    f.write("-- written by tests/ref/gen_log.py: what tests/ref/log_events/ holds\n")
    f.write("return {\n")
    f.write("  wall = %r,\n" % WALL)
    f.write("  loss = { { step = 1, value = 0.5 }, { step = 2, value = 0.25 }, { step = 3, nan = true } },\n")
    f.write("  acc = { step = 5, value = 0.75 },\n")
    f.write("  image = { step = 7, width = 3, height = 2, colorspace = 3, pixels = { %s } },\n" % ", ".join(map(str, flat)))
    f.write("  histogram = { step = 9, min = -1, max = 2, num = 6, sum = 3.5, sum_squares = 7.25,"
            " limits = { 0, 1, 2 }, counts = { 2, 3, 1 } },\n")
    f.write("  text = { step = 11, text = \"hello *tocha*\" },\n")
    f.write("  hparams = { values = { lr = 0.01, opt = \"adam\", ema = true }, metrics = { \"eval/acc\" } },\n")
    f.write("}\n")
print("wrote", out, "and log_ref.lua")
