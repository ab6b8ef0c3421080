"""bench/sweep_optuna.py: the peer of bench/sweep.lua, Optuna on the same work.
  python3 bench/sweep_optuna.py search SEEDS TRIALS   median best of Optuna's default TPESampler
                                                      on Branin and Hartmann-6, as JSON
  python3 bench/sweep_optuna.py overhead N JOBS DB     N no-op trials on JOBS threads with SQLite
                                                      storage at DB; prints the seconds taken
"""
import json
import math
import statistics
import sys
import time

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)

ALPHA = [1.0, 1.2, 3.0, 3.2]
A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
P = [[0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886], [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
     [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650], [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381]]


def branin(trial):
    x1 = trial.suggest_float("x1", -5, 10)
    x2 = trial.suggest_float("x2", 0, 15)
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 ** 2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def hartmann6(trial):
    x = [trial.suggest_float("x%d" % (j + 1), 0, 1) for j in range(6)]
    return -sum(ALPHA[i] * math.exp(-sum(A[i][j] * (x[j] - P[i][j]) ** 2 for j in range(6))) for i in range(4))


def search(seeds, trials):
    out = {}
    for name, f in (("branin", branin), ("hartmann6", hartmann6)):
        best = []
        for seed in range(seeds):
            study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
            study.optimize(f, n_trials=trials)
            best.append(study.best_value)
        out[name] = {"median": statistics.median(best), "best": best}
    print(json.dumps(out))


def overhead(n, jobs, db):
    study = optuna.create_study(storage="sqlite:///" + db, study_name="noop")
    t0 = time.perf_counter()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n, n_jobs=jobs)
    print(time.perf_counter() - t0)


if __name__ == "__main__":
    if sys.argv[1] == "search":
        search(int(sys.argv[2]), int(sys.argv[3]))
    else:
        overhead(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
