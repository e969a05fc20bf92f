"""The documents: relative links and anchors resolve, no document cites a file that is not there, the README stays a
short user's guide, and its table of the bundle's figures is the results file's."""
import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md", "benchmarks/results/README.md",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6} (.+)", line)
        if m:
            s = _slug(m.group(1))
            n = seen.get(s, 0)
            out.add(s if n == 0 else f"{s}-{n}")
            seen[s] = n + 1
    return out


def _links(doc: Path):
    in_code = False
    for line in doc.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        for m in LINK.finditer(line):
            yield m.group(1) or m.group(2)


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_and_anchors_resolve(doc):
    path = ROOT / doc
    bad = []
    for target in _links(path):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not bad, f"{doc}: " + "; ".join(bad)


def _tracked_text_files():
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in names:
        p = ROOT / name
        if p.suffix in {".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".txt", ".cfg"} or name == ".ci/run":
            if p.is_file():
                yield name, p.read_text(errors="replace")


def test_no_file_cites_a_missing_design_document():
    bad = [name for name, text in _tracked_text_files() if re.search(r"DESIGN\.md|\.\./shared", text)]
    assert not bad, bad


def test_design_anchors_cited_in_the_code_exist():
    anchors = _anchors(ROOT / "docs" / "design.md")
    bad = []
    for name, text in _tracked_text_files():
        for a in re.findall(r"docs/design\.md#([\w-]+)", text):
            if a not in anchors:
                bad.append(f"{name}: #{a}")
    assert not bad, bad


def test_readme_is_short():
    assert (ROOT / "README.md").stat().st_size <= 25_000


def test_readme_table_is_the_bundles_100_record_runs():
    """Both columns of the README's table: the world's templates and the held-out everyday wordings."""
    metric = {"caption_image": "acc", "caption_audio": "acc", "caption_video": "acc", "gen_image": "key",
              "gen_video": "key", "image_audio_to_video": "key", "joint_image_audio": "coherence"}
    rows = re.findall(r"^\| [^|]*\(`(\w+)`\) \| [^|]+ \| ([\d.]+) %[^|]*\| ([\d.]+) %", (ROOT / "README.md").read_text(),
                      re.M)
    assert len(rows) == 18
    for column, name in ((1, "mini_world_eval_n100_stage16.json"), (2, "mini_world_eval_n100_stage16_heldout.json")):
        results = json.loads((ROOT / "benchmarks/results" / name).read_text())["metrics"]
        one_shot = {t["task"]: t["value"] for t in results["targets"] if t["shots"] == 1}
        for row in rows:
            task, value = row[0], row[column]
            want = one_shot[task] if task in one_shot else results["by_task"][task][metric.get(task, "exact")]["mean"]
            assert abs(float(value) - 100 * want) < 0.051, (name, task, value, want)