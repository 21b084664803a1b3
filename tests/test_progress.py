import io

from fden_tf import progress


class FakeTerminal(io.StringIO):
  def isatty(self):
    return True


def test_progress_shows_count_rate_and_eta_on_a_terminal():
  out = FakeTerminal()
  bar = progress.Progress(10, "FDEN training", unit="step", stream=out)
  for _ in range(10):
    bar.update(1, postfix="L_C=0.5")
  bar.close()
  last = out.getvalue().split("\r")[-1]
  assert "FDEN training: 10/10" in last and "step/s" in last and "<0:00" in last and "L_C=0.5" in last


def test_progress_is_quiet_off_a_terminal_and_when_disabled():
  out = io.StringIO()
  bar = progress.Progress(5, "ALI training", stream=out)
  for _ in range(5):
    bar.update(1)
  bar.close()
  assert out.getvalue() == ""
  tty = FakeTerminal()
  bar = progress.Progress(5, "ALI training", stream=tty, enabled=False)
  bar.update(5)
  bar.close()
  assert tty.getvalue() == ""
