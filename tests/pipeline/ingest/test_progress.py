"""pipeline.ingest.progress: a bar on a terminal, plain lines in logs (#14 defect 8). Real SQLite, no Ray."""
from __future__ import annotations

import io
import os
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.ingest.progress import Progress, progress_line
from pipeline.store import ProgressEvent, new_run, open_db


def test_progress_line_says_done_total_errors_hours_rate_and_eta():
    # 10 of 40 files in 120 s with 1.5 audio hours: 0.75 audio h/min; 30 files left at 12 s each: 6 min.
    line = progress_line(8, 2, 40, 5400.0, 120.0)
    assert line == "chromaray progress: 10/40 files, 2 errors, 1.500 audio h, 0.75 audio h/min, ETA 6m00s"
    assert progress_line(0, 0, 5, 0.0, 3.0).endswith("0/5 files, 0 errors, 0.000 audio h, 0.00 audio h/min, ETA ?")
    assert progress_line(5, 0, 5, 7200.0, 3725.0, final=True).endswith("2.000 audio h, 0.03 audio h/min, "
                                                                       "finished in 1h02m")
    # errors recorded before the stream (skipped paths) are reported but are not finished files
    assert progress_line(1, 3, 4, 60.0, 10.0, base_errors=2).startswith("chromaray progress: 2/4 files, 3 errors,")


def test_without_a_terminal_a_line_comes_every_interval_even_between_batches(tmp_path):
    engine = open_db(tmp_path / "c.db")
    run_id = new_run(engine, "fingerprint")
    log = io.StringIO()  # not a terminal, like `ray job logs`, CI or `| tee`
    p = Progress(engine, run_id, 4, stream=log, log_interval_s=0.2)
    assert p.bar is None
    p.update(1, 0, 30.0)
    time.sleep(0.75)  # no update in between: a slow batch must not silence the log
    lines = log.getvalue().splitlines()
    assert len(lines) >= 2, lines
    assert all(ln.startswith("chromaray progress: 1/4 files, 0 errors, 0.008 audio h, ") for ln in lines), lines
    p.update(3, 1, 90.0, force=True)
    p.close()
    p.close()  # idempotent: one final line
    last = log.getvalue().splitlines()
    assert last[-1].startswith("chromaray progress: 4/4 files, 1 error, 0.025 audio h, ") and "finished in" in last[-1]
    assert sum("finished in" in ln for ln in last) == 1
    with Session(engine) as s:  # the dashboard's rows are written as before
        assert [e.done for e in s.scalars(select(ProgressEvent).where(ProgressEvent.run_id == run_id))][-1] == 3


def test_on_a_terminal_it_is_a_bar_and_no_lines(tmp_path):
    engine = open_db(tmp_path / "c.db")
    run_id = new_run(engine, "fingerprint")
    import fcntl
    import select as sel
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with os.fdopen(slave, "w") as tty:
        p = Progress(engine, run_id, 3, stream=tty, log_interval_s=0.05)
        assert p.bar is not None
        p.update(2, 0, 10.0)
        time.sleep(0.2)
        p.close()
    out = ""
    while sel.select([master], [], [], 0.2)[0]:
        try:
            out += os.read(master, 65536).decode(errors="replace")
        except OSError:
            break
    os.close(master)
    assert "2/3" in out and "chromaray progress:" not in out


def test_no_progress_means_silence(tmp_path):
    engine = open_db(tmp_path / "c.db")
    log = io.StringIO()
    p = Progress(engine, new_run(engine, "fingerprint"), 2, show=False, stream=log, log_interval_s=0.05)
    p.update(1, 0, 1.0)
    time.sleep(0.2)
    p.close()
    assert log.getvalue() == ""
