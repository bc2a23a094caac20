"""The documents hold together: every relative link in README.md and docs/ names a file of the
repository, and the README's CUDA build of PyTorch is the one the Dockerfile installs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_links_name_files_of_the_repository():
    broken = []
    for doc in DOCUMENTS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, or an anchor in the same page
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            if not path.exists() or ROOT not in path.parents:
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert broken == []


def test_readme_links_the_architecture():
    assert "](docs/architecture.md)" in (ROOT / "README.md").read_text()


def test_readme_and_dockerfile_install_the_same_cuda_build():
    readme = (ROOT / "README.md").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    readme_index = re.findall(r"--index-url (https://download\.pytorch\.org/whl/cu\d+)", readme)
    docker_index = re.search(r"^ARG TORCH_INDEX=(\S+)$", dockerfile, re.MULTILINE).group(1)
    assert readme_index == [docker_index]
    cuda = re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.(\d+)\.", dockerfile, re.MULTILINE)
    assert docker_index.endswith(f"/cu{cuda.group(1)}{cuda.group(2)}")  # the image's CUDA is the wheel's
    pinned = re.search(r'"torch==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"torch=={pinned} --index-url" in readme and f"torch=={pinned}" in dockerfile
