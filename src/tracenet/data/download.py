"""Fetch COCO 2017 and LVIS v1 from their official URLs: resumable, verified, atomic, idempotent.

- Resumable: bytes arrive in ``<archive>.part``; a dropped connection is retried with an
  HTTP ``Range`` request from the bytes already there (a server that ignores Range restarts
  the file cleanly).
- Verified: the byte count must equal the server's announced total, and the MD5 must equal
  the published one (``SOURCES``); a mismatch deletes the download and says so.
- Atomic: the archive gets its final name only once verified, and is extracted into a
  temporary folder whose entries are then renamed into place; a ``.done`` marker is written
  last.
- Idempotent: a source whose marker exists is skipped without touching the network.
A failure names the URL and the reason, and says how to place the files by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tracenet.atomic import write_text


@dataclass(frozen=True)
class Source:
    """One official archive: where it comes from, its published MD5, and what it creates
    under the data root once extracted (relative path), used to skip finished work."""

    name: str
    url: str
    md5: str | None
    creates: str
    extract_to: str = "."


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "coco2017_annotations",
            "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
            "f4bbac642086de4f52a3fdda2de5fa2c",
            "annotations/instances_val2017.json",
        ),
        Source(
            "coco2017_val_images",
            "http://images.cocodataset.org/zips/val2017.zip",
            "442b8da7639aecaf257c1dceb8ba8c80",
            "val2017",
        ),
        Source(
            "coco2017_train_images",
            "http://images.cocodataset.org/zips/train2017.zip",
            "cced6f7f71b7629ddf16f17bbcfab6b2",
            "train2017",
        ),
        Source(
            "lvis_v1_train",
            "https://dl.fbaipublicfiles.com/LVIS/lvis_v1_train.json.zip",
            "4410d837f71203af226950447ef9d422",
            "lvis/lvis_v1_train.json",
            extract_to="lvis",
        ),
        Source(
            "lvis_v1_val",
            "https://dl.fbaipublicfiles.com/LVIS/lvis_v1_val.json.zip",
            "87734a7f895990b9552075d7ce723e27",
            "lvis/lvis_v1_val.json",
            extract_to="lvis",
        ),
    )
}

TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError)


class DownloadError(RuntimeError):
    """A source could not be fetched or verified; the message says what to do instead."""


def md5sum(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _total(response, offset: int) -> int | None:
    """Full size of the file from Content-Range (206) or Content-Length (200)."""
    match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range") or "")
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return int(length) + offset if length is not None else None


def _check_space(dest: Path, total: int | None, offset: int) -> None:
    """Fail before writing when the archive cannot fit (COCO train is about 18 GiB)."""
    if total is None:
        return
    free = shutil.disk_usage(dest.parent).free
    if free < total - offset:
        raise DownloadError(
            f"{dest.name} needs {(total - offset) / 2**30:.1f} GiB more but {dest.parent} has "
            f"{free / 2**30:.1f} GiB free; free some space or set paths.data_root elsewhere"
        )


@contextmanager
def _progress(name: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on an interactive terminal; nothing in logs and tests."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        *Progress.get_default_columns(),
        DownloadColumn(),
        TransferSpeedColumn(),
        disable=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task(name, total=total)
        yield lambda n: bar.advance(task, n)


def _by_hand(url: str, dest: Path, md5: str | None) -> str:
    check = f", check that its MD5 is {md5}" if md5 else ""
    return f"To place it by hand: download {url} with any tool{check}, and save it as {dest}, then rerun."


def download_file(
    url: str,
    dest: str | Path,
    md5: str | None = None,
    *,
    retries: int = 5,
    timeout: float = 60.0,
    chunk: int = 1 << 20,
    backoff: float = 1.0,
    log: Callable[[str], None] = print,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify it, then rename it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    total: int | None = None
    failures = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if total is not None and offset == total:
            break
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if offset and response.status != 206:  # Range ignored: start over
                    log(f"{url}: server does not resume, restarting the download")
                    offset = 0
                total = _total(response, offset)
                _check_space(dest, total, offset)
                with part.open("r+b" if offset else "wb") as f, _progress(dest.name, total) as advance:
                    f.seek(offset)
                    f.truncate()
                    advance(offset)
                    while block := response.read(chunk):
                        f.write(block)
                        advance(len(block))
            size = part.stat().st_size
            if total is None or size == total:
                total = size
                break
            raise http.client.IncompleteRead(b"", total - size)
        except urllib.error.HTTPError as err:
            if err.code == 416 and part.exists():  # nothing left to send: the .part is complete
                break
            raise DownloadError(
                f"could not fetch {url}: HTTP {err.code} {err.reason}. {_by_hand(url, dest, md5)}"
            ) from None
        except TRANSIENT as err:
            failures += 1
            have = part.stat().st_size if part.exists() else 0
            if failures > retries:
                raise DownloadError(
                    f"could not fetch {url} after {failures} attempts ({type(err).__name__}: {err}); "
                    f"{have} bytes are kept in {part} and a rerun resumes from there. "
                    f"{_by_hand(url, dest, md5)}"
                ) from None
            log(f"{url}: {type(err).__name__} at byte {have}, resuming (attempt {failures + 1})")
            time.sleep(backoff * failures)
    size = part.stat().st_size
    if total is not None and size != total:
        part.unlink()
        raise DownloadError(
            f"{url}: got {size} bytes, the server announced {total}; deleted, rerun to fetch again"
        )
    if md5 is not None:
        got = md5sum(part)
        if got != md5:
            part.unlink()
            raise DownloadError(
                f"{url}: MD5 {got} does not match the published {md5}; the download was deleted, "
                f"rerun to fetch it again. {_by_hand(url, dest, md5)}"
            )
    os.replace(part, dest)
    return dest


def extract(archive: Path, target: Path) -> None:
    """Unzip ``archive`` into ``target``: into a temporary folder first, then each top-level
    entry is renamed into place (replacing a stale one), so no half-extracted folder remains."""
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target, prefix=f".{archive.name}.", suffix=".tmp"))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        except zipfile.BadZipFile as err:
            raise DownloadError(
                f"{archive} is not a valid zip archive ({err}); delete it and rerun"
            ) from None
        for entry in tmp.iterdir():
            final = target / entry.name
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(entry, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_source(source: Source, root: str | Path, *, keep_archive: bool = False, **kwargs) -> bool:
    """Download, verify and extract one source under ``root``; False when already done."""
    root = Path(root)
    marker = root / f".{source.name}.done"
    if marker.exists() and (root / source.creates).exists():
        return False
    archive = root / "downloads" / source.url.rsplit("/", 1)[-1]
    if not archive.exists():
        download_file(source.url, archive, source.md5, **kwargs)
    elif source.md5 is not None and md5sum(archive) != source.md5:  # placed by hand
        raise DownloadError(
            f"{archive} does not have the published MD5 {source.md5}: it is not {source.url} "
            "(or it is truncated); delete it and rerun"
        )
    extract(archive, root / source.extract_to)
    if not (root / source.creates).exists():
        raise DownloadError(
            f"{archive} extracted, but {root / source.creates} is missing: the archive does not have "
            "the expected layout; delete it and rerun"
        )
    write_text(marker, json.dumps({"url": source.url, "md5": source.md5}) + "\n")
    if not keep_archive:
        archive.unlink()
    return True


def download_dataset(
    names: Iterable[str], root: str | Path, manifest: str | Path | None = None, **kwargs
) -> dict[str, str]:
    """Fetch every named source (keys of SOURCES) into ``root``; write a manifest JSON of what
    is in place. An empty list (the synthetic dataset) fetches nothing and says so."""
    names = list(names)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"unknown download source(s) {unknown}; known: {sorted(SOURCES)}")
    status: dict[str, str] = {}
    log = kwargs.get("log", print)
    if not names:
        log("nothing to download: this dataset is generated locally (the prepare stage makes it)")
    for name in names:
        fetched = fetch_source(SOURCES[name], root, **kwargs)
        status[name] = "downloaded" if fetched else "already present"
        log(f"{name}: {status[name]} under {root}")
    if manifest is not None:
        entries = {
            n: {"url": SOURCES[n].url, "md5": SOURCES[n].md5, "creates": SOURCES[n].creates} for n in names
        }
        write_text(manifest, json.dumps({"root": str(root), "sources": entries}, indent=2) + "\n")
    return status


def main(argv: list[str] | None = None) -> int:
    """`python -m tracenet.data.download NAME... --root DIR`: fetch sources by hand."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", choices=sorted(SOURCES))
    parser.add_argument("--root", required=True, help="data root, e.g. data/coco")
    parser.add_argument("--keep-archives", action="store_true")
    args = parser.parse_args(argv)
    try:
        download_dataset(args.names, args.root, keep_archive=args.keep_archives)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
