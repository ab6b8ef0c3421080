-- written by tests/ref/gen_log.py: what tests/ref/log_events/ holds
return {
  wall = 1700000000.5,
  loss = { { step = 1, value = 0.5 }, { step = 2, value = 0.25 }, { step = 3, nan = true } },
  acc = { step = 5, value = 0.75 },
  image = { step = 7, width = 3, height = 2, colorspace = 3, pixels = { 255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90 } },
  histogram = { step = 9, min = -1, max = 2, num = 6, sum = 3.5, sum_squares = 7.25, limits = { 0, 1, 2 }, counts = { 2, 3, 1 } },
  text = { step = 11, text = "hello *tocha*" },
  hparams = { values = { lr = 0.01, opt = "adam", ema = true }, metrics = { "eval/acc" } },
}
