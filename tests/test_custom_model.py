"""docs/custom_model.md runs as written: its files are written, its commands run, its assertions hold."""

import os
import re
import subprocess

from tests.conftest import ROOT

BLOCK = re.compile(r"```(\w+)( file=(\S+))?\n(.*?)```", re.DOTALL)


def test_the_custom_model_tutorial_runs(tmp_path):
    text = (ROOT / "docs" / "custom_model.md").read_text()
    blocks = BLOCK.findall(text)
    assert sum(1 for _, _, name, _ in blocks if name) == 5 and sum(1 for lang, *_ in blocks if lang == "bash") == 2
    env = {**os.environ, "SLM": str(ROOT)}
    for language, _, name, body in blocks:
        if name:
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        elif language == "bash":
            proc = subprocess.run(["bash", "-ec", body], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "fitted J = " in proc.stdout
