"""A dependency-free progress line with rate and ETA for every long stage.

On a terminal it redraws one line; elsewhere (logs, CI) it prints a line every 10% so logs stay short.
"""

import sys
import time


def _fmt_time(seconds):
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:

  def __init__(self, total, desc, enabled=True, unit="it", stream=None, initial=0):
    self.total, self.desc, self.enabled, self.unit = total, desc, enabled and total > 0, unit
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.count = initial
    self._start_count = initial
    self._start = time.time()
    self._next_report = 0.1
    self.postfix = ""

  def update(self, n=1, postfix=None):
    self.count += n
    if postfix is not None:
      self.postfix = postfix
    if not self.enabled:
      return
    fraction = self.count / self.total
    if self.tty:
      self._write("\r" + self._line(), end="")
    elif fraction >= self._next_report or self.count >= self.total:
      self._write(self._line())
      while self._next_report <= fraction:
        self._next_report += 0.1

  def _line(self):
    elapsed = time.time() - self._start
    rate = (self.count - self._start_count) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - self.count) / rate if rate > 0 else 0.0
    line = (f"{self.desc}: {self.count}/{self.total} [{_fmt_time(elapsed)}<{_fmt_time(eta)}, "
            f"{rate:.1f} {self.unit}/s]")
    return line + (f" {self.postfix}" if self.postfix else "")

  def _write(self, text, end="\n"):
    self.stream.write(text + end)
    self.stream.flush()

  def close(self):
    if self.enabled and self.tty:
      self._write("\r" + self._line())
