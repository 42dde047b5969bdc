"""The README's Python example runs as written (with fewer iterations)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_algorithm_1_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(b for b in blocks if "sampler.run(energy, z)" in b)
    assert "for it in range(200)" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("range(200)", "range(2)"), "README.md", "exec"), {})
    assert (tmp_path / "samples.png").exists()


def test_readme_starts_with_the_two_newcomer_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1)
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert "ebmkit train" in commands[0] and "pytest" in commands[1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci
