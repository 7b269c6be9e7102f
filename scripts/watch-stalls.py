#!/usr/bin/env python3
"""Watches this machine for stalls and clock steps, one line per event, until killed.

A thread that asks to wake every 10 ms records:
  - a stall: the wake came more than 250 ms late on the monotonic clock (the process, or the
    whole machine: a VM paused by its host, heavy swapping), with the CPU time the hypervisor
    stole from this VM meanwhile (the `steal` column of /proc/stat);
  - a clock step: the wall clock moved against the monotonic clock by more than 50 ms (NTP or
    the hypervisor setting the time), which shifts every timestamp the database writes.

`scripts/test-repeat.sh` runs it beside the tests and prints the events that happened during a
failed run, so that a late expiry can be told apart from a machine that stopped.

Usage: watch-stalls.py [LOG]   (default: standard output)
"""

import sys
import time

STALL = 0.250
STEP = 0.050
TICK = 0.010


def steal_jiffies():
    with open("/proc/stat") as f:
        fields = f.readline().split()
    # cpu user nice system idle iowait irq softirq steal ...
    return int(fields[8]) if len(fields) > 8 else 0


def main():
    out = open(sys.argv[1], "a", buffering=1) if len(sys.argv) > 1 else sys.stdout
    hz = 100
    last_mono = time.monotonic()
    offset = time.time() - last_mono
    last_steal = steal_jiffies()
    print(f"{time.strftime('%H:%M:%S')} watching (stall > {STALL * 1000:.0f} ms, "
          f"clock step > {STEP * 1000:.0f} ms)", file=out)
    while True:
        time.sleep(TICK)
        mono = time.monotonic()
        wall = time.time()
        gap = mono - last_mono
        if gap > STALL:
            steal = steal_jiffies()
            print(f"{time.strftime('%H:%M:%S', time.localtime(wall))} stall {gap * 1000:.0f} ms "
                  f"(steal {(steal - last_steal) * 1000 / hz:.0f} ms of CPU time since the last "
                  f"stall)", file=out)
            last_steal = steal
        step = (wall - mono) - offset
        if abs(step) > STEP:
            print(f"{time.strftime('%H:%M:%S', time.localtime(wall))} clock step "
                  f"{step * 1000:+.0f} ms (wall clock against monotonic)", file=out)
            offset = wall - mono
        last_mono = mono


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
