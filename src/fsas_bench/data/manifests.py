"""Shot manifests (conventions.md §3): which k normal training images each category uses as references.

A manifest is a small UTF-8 text file, ``# key: value`` header lines then ``<category>\\t<relative path>`` lines
grouped by category in dataset order. Its SHA-256 (after normalising line endings and trailing whitespace)
goes into every result row. Seeded draws are nested (a k-shot set starts every larger one); fixed lists from
DictAS (``fix_<k>-shot.txt``) and PromptAD/WinCLIP (``selected_samples_per_run.txt``) can be imported.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError
from fsas_bench.files import atomic_write_bytes
from fsas_bench.numbers import MAX_SEED, strict_int

HEADER_KEYS = ("manifest", "version", "dataset", "k", "seed", "source", "index_interpretation")
INDEX_INTERPRETATIONS = ("sorted", "n/a")
OFFICIAL_SEED = "official"
PROMPTAD_SEED_FILE = "selected_samples_per_run.txt"
DICTAS_CATEGORY_ALIASES = {"metal1": "01", "wood": "02", "metal2": "03"}  # DictAS's names for BTAD products

_DICTAS_FILE_NAME = re.compile(r"fix_(\d+)-shot\.txt")
_DICTAS_COUNTER_NAME = re.compile(r"[^_]+_(\d+)")  # mvtec_000091: a counter over the whole converted dataset
_DICTAS_STEM_NAME = re.compile(r"[^_]+_(.+)_\d+")  # visa_0246_000390: the original stem, then the counter
_PROMPTAD_LINE = re.compile(r"#(\d+):(.*)")


@dataclass(frozen=True)
class ShotManifest:
    """One shot draw for a whole dataset.

    Attributes:
        name: manifest name, e.g. ``"seeded"``, ``"dictas_official"``.
        version: manifest version; any change to a committed manifest is a new version.
        dataset: dataset name (``DatasetIndex.name``).
        k: references per category (0 for zero-shot).
        seed: the draw's seed, or ``"official"`` for imported fixed lists.
        source: how it was made: ``seeded``, ``dictas_official``, ``promptad_seedfile``.
        index_interpretation: ``sorted`` when list indices were read against the sorted train list, else ``n/a``.
        entries: ``(category, relative path)`` pairs, grouped by category in dataset order, in draw order.
    """

    name: str
    version: int
    dataset: str
    k: int
    seed: int | str
    source: str
    index_interpretation: str
    entries: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        """A short human-readable identity used in messages."""
        return f"{self.dataset}/{self.name}@v{self.version} k={self.k} seed={self.seed}"

    def paths(self, category: str) -> list[str]:
        """The category's reference paths, in draw order."""
        return [path for entry_category, path in self.entries if entry_category == category]

    def text(self) -> str:
        """The canonical file content."""
        values = (self.name, self.version, self.dataset, self.k, self.seed, self.source, self.index_interpretation)
        header = [f"# {key}: {value}" for key, value in zip(HEADER_KEYS, values)]
        return "\n".join(header + [f"{category}\t{path}" for category, path in self.entries]) + "\n"

    @property
    def sha(self) -> str:
        """``shot_manifest_sha`` of the canonical file content."""
        return shot_manifest_sha(self.text().encode("utf-8"))


def draw_manifest(index: DatasetIndex, k: int, seed: int, *, name: str = "seeded", version: int = 1) -> ShotManifest:
    """The seeded draw: per category, the first k of a permutation of its sorted normal training images.

    The permutation comes from ``numpy.random.default_rng([seed, crc32("<dataset>/<category>")])``, so the
    draws for different k are nested.
    """
    if k < 0 or not 0 <= seed <= MAX_SEED:
        raise UserError(
            f"shots must be >= 0 and seeds in [0, {MAX_SEED}] (got k={k}, seed={seed}): fix --shots/--seeds"
        )
    entries: list[tuple[str, str]] = []
    for category in index.categories:
        candidates = index.normal_train(category)
        if k > len(candidates):
            raise UserError(
                f"category '{category}' has only {len(candidates)} normal training images; "
                f"use --shots up to {len(candidates)}"
            )
        rng = np.random.default_rng([seed, zlib.crc32(f"{index.name}/{category}".encode())])
        entries += [(category, candidates[i].rel_path) for i in rng.permutation(len(candidates))[:k]]
    return ShotManifest(name, version, index.name, k, seed, "seeded", "n/a", tuple(entries))


def manifest_path(shots_dir: str | Path, manifest: ShotManifest) -> Path:
    """Where a manifest lives: ``<shots_dir>/<dataset>/<name>/v<version>/k<k>_seed<seed>.txt``."""
    file_name = f"k{manifest.k}_seed{manifest.seed}.txt"
    return Path(shots_dir) / manifest.dataset / manifest.name / f"v{manifest.version}" / file_name


def normalise_manifest_bytes(data: bytes) -> bytes:
    """LF line endings, no trailing whitespace on any line, no trailing blank lines, one final newline."""
    lines = [line.rstrip() for line in data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    return b"\n".join(lines) + b"\n"


def shot_manifest_sha(data: bytes) -> str:
    """SHA-256 (hex) of a manifest file's normalised bytes: the ``shot_manifest_sha`` result column."""
    return hashlib.sha256(normalise_manifest_bytes(data)).hexdigest()


def write_manifest(manifest: ShotManifest, path: str | Path) -> str:
    """Write the manifest atomically (temporary file, then rename) and return its SHA-256."""
    data = manifest.text().encode("utf-8")
    atomic_write_bytes(Path(path), data, "shot manifest")
    return shot_manifest_sha(data)


def read_manifest(path: str | Path) -> ShotManifest:
    """Parse a manifest file and run the checks that need no dataset (header, line syntax, counts, uniqueness)."""
    path = Path(path)
    try:
        text = normalise_manifest_bytes(path.read_bytes()).decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"shot manifest '{path}' not found: check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read shot manifest '{path}' ({exc}): regenerate it") from exc
    header: dict[str, str] = {}
    entries: list[tuple[str, str]] = []
    for number, line in enumerate(text.rstrip("\n").split("\n"), start=1):
        if line.startswith("#") and not entries:
            key, colon, value = line.removeprefix("# ").partition(": ")
            if not colon or key not in HEADER_KEYS or key in header:
                raise UserError(f"line {number} of shot manifest '{path}' is not a known '# key: value' header: fix it")
            header[key] = value
            continue
        category, tab, rel_path = line.partition("\t")
        if not category or not rel_path or "\t" in rel_path or line.startswith("#"):
            raise UserError(f"line {number} of shot manifest '{path}' is not '<category><TAB><path>': fix it")
        entries.append((category, rel_path))
    manifest = _manifest_from_header(header, tuple(entries), path)
    _check_entries(manifest)
    return manifest


def validate_manifest(manifest: ShotManifest, index: DatasetIndex) -> None:
    """Check a manifest against a dataset (conventions.md §3.2); raise the first problem as UserError.

    Every category present with exactly k unique paths, each an existing normal training image of that
    category and none in the test split.
    """
    _check_entries(manifest)
    if manifest.dataset != index.name:
        raise UserError(
            f"shot manifest {manifest.label} is for dataset '{manifest.dataset}', not '{index.name}': "
            f"use a manifest of '{index.name}'"
        )
    listed = {category for category, _ in manifest.entries}
    unknown = sorted(listed - set(index.categories))
    if unknown:
        raise UserError(
            f"shot manifest {manifest.label} lists category '{unknown[0]}', unknown to dataset '{index.name}': "
            "fix the category name"
        )
    missing = [category for category in index.categories if category not in listed]
    if manifest.k and missing:
        raise UserError(
            f"shot manifest {manifest.label} has no references for category '{missing[0]}': "
            f"add {manifest.k} for every category"
        )
    test_paths = {s.rel_path for s in index.samples if s.split == "test"}
    for category in index.categories:
        normal_train = {s.rel_path for s in index.normal_train(category)}
        for rel_path in manifest.paths(category):
            if rel_path in test_paths:
                problem = "is a test image"
            elif rel_path not in normal_train:
                problem = f"is not a normal training image of category '{category}'"
            elif not (index.root / rel_path).is_file():
                problem = f"is missing under '{index.root}'"
            else:
                continue
            raise UserError(
                f"shot manifest {manifest.label} reference '{rel_path}' {problem}: "
                "use only normal training images of the category"
            )


def support_samples(manifest: ShotManifest, index: DatasetIndex, category: str) -> list[Sample]:
    """The category's reference samples, in manifest order (the manifest must be valid for ``index``)."""
    by_path = {s.rel_path: s for s in index.normal_train(category)}
    return [by_path[rel_path] for rel_path in manifest.paths(category)]


def import_dictas(path: str | Path, index: DatasetIndex, k: int | None = None) -> ShotManifest:
    """Import a DictAS ``fix_few_path/<dataset>/fix_<k>-shot.txt`` list as manifest ``dictas_official``.

    Lines are ``<dataset>/<class>/train/good/<name>.bmp`` in DictAS's converted copy, in any class order.
    ``<prefix>_<stem>_<counter>`` names (VisA, MPDD, BTAD) keep the original file stem; ``<prefix>_<counter>``
    names (MVTec AD) count every image of the converted dataset, class by class in dataset order, first the
    sorted normal training images and then the test images, so the position in the sorted train list is the
    counter minus the images of the preceding classes (recorded as ``index_interpretation: sorted``).
    BTAD's ``metal1``/``wood``/``metal2`` are products ``01``/``02``/``03``. ``k`` defaults to the file name's.
    """
    path = Path(path)
    if k is None:
        match = _DICTAS_FILE_NAME.fullmatch(path.name)
        if match is None:
            raise UserError(f"cannot tell k from the DictAS list name '{path.name}': name it fix_<k>-shot.txt")
        k = int(match[1])
    first_counter = _first_counters(index)
    by_category: dict[str, list[str]] = {}
    used_counter = False
    for number, line in enumerate(_read_lines(path), start=1):
        parts = PurePosixPath(line).parts
        if len(parts) < 4 or parts[-3:-1] != ("train", "good"):
            raise UserError(
                f"line {number} of DictAS list '{path}' is not '<dataset>/<class>/train/good/<file>': fix it"
            )
        category = parts[-4] if parts[-4] in index.categories else DICTAS_CATEGORY_ALIASES.get(parts[-4], "")
        if category not in index.categories:
            raise UserError(
                f"DictAS list '{path}' names class '{parts[-4]}', unknown to dataset '{index.name}': "
                "import the list of this dataset"
            )
        stem = PurePosixPath(parts[-1]).stem
        pool = index.normal_train(category)
        if counter := _DICTAS_COUNTER_NAME.fullmatch(stem):
            used_counter = True
            matches = _at_position(pool, int(counter[1]) - first_counter[category])
        elif original := _DICTAS_STEM_NAME.fullmatch(stem):
            matches = [s.rel_path for s in pool if PurePosixPath(s.rel_path).stem == original[1]]
        else:
            matches = []
        if len(matches) != 1:
            raise UserError(
                f"DictAS list '{path}' line {number} ('{parts[-1]}') matches no single normal training image of "
                f"'{category}': check that the dataset is complete and the list belongs to it"
            )
        by_category.setdefault(category, []).append(matches[0])
    entries = tuple((c, p) for c in index.categories for p in by_category.get(c, []))
    interpretation = "sorted" if used_counter else "n/a"
    manifest = ShotManifest(
        "dictas_official", 1, index.name, k, OFFICIAL_SEED, "dictas_official", interpretation, entries
    )
    validate_manifest(manifest, index)
    return manifest


def import_promptad(seeds_dir: str | Path, index: DatasetIndex, k: int) -> ShotManifest:
    """Import PromptAD/WinCLIP seed files ``<seeds_dir>/<category>/selected_samples_per_run.txt`` for one k.

    Their ``#k: i j …`` indices are read against each category's **sorted** normal training list (PromptAD's
    own unsorted glob order is file-system dependent); recorded as ``index_interpretation: sorted``.
    """
    entries: list[tuple[str, str]] = []
    for category in index.categories:
        seed_file = Path(seeds_dir) / category / PROMPTAD_SEED_FILE
        pool = index.normal_train(category)
        for position in _promptad_indices(seed_file, k):
            matches = _at_position(pool, position)
            if not matches:
                raise UserError(
                    f"'{seed_file}' selects index {position} for k={k}, but category '{category}' has only "
                    f"{len(pool)} normal training images: use the seed files of this dataset"
                )
            entries.append((category, matches[0]))
    manifest = ShotManifest(
        "promptad_seedfile", 1, index.name, k, OFFICIAL_SEED, "promptad_seedfile", "sorted", tuple(entries)
    )
    validate_manifest(manifest, index)
    return manifest


def import_shot_list(path: str | Path, index: DatasetIndex, shots: Sequence[int]) -> list[ShotManifest]:
    """Manifests from a user's fixed reference list, recognised by its form.

    - a directory: PromptAD/WinCLIP seed files (``<category>/selected_samples_per_run.txt``), one manifest per
      k in ``shots``;
    - ``fix_<k>-shot.txt``: a DictAS list;
    - any other file: an fsas-bench manifest (e.g. one written into a run's ``manifests/`` folder).

    Every manifest is validated against ``index``.
    """
    path = Path(path)
    if path.is_dir():
        return [import_promptad(path, index, k) for k in shots if k > 0]
    if not path.is_file():
        raise UserError(f"shot list '{path}' does not exist: pass a DictAS fix_<k>-shot.txt, a PromptAD seeds "
                        "folder or an fsas-bench manifest file")  # fmt: skip
    if _DICTAS_FILE_NAME.fullmatch(path.name):
        return [import_dictas(path, index)]
    manifest = read_manifest(path)
    validate_manifest(manifest, index)
    return [manifest]


def _manifest_from_header(header: dict[str, str], entries: tuple[tuple[str, str], ...], path: Path) -> ShotManifest:
    missing = [key for key in HEADER_KEYS if key not in header]
    if missing:
        raise UserError(f"shot manifest '{path}' lacks header line(s) {', '.join(missing)}: regenerate it")
    version, k, seed = (strict_int(header[key]) for key in ("version", "k", "seed"))
    if version is None or k is None or (seed is None and header["seed"] != OFFICIAL_SEED):
        raise UserError(f"shot manifest '{path}' has a non-integer version, k or seed: fix its header")
    if version < 0 or k < 0 or (seed is not None and not 0 <= seed <= MAX_SEED):
        raise UserError(f"shot manifest '{path}' has a negative version or k, or a seed outside [0, {MAX_SEED}]: "
                        "fix its header")  # fmt: skip
    if header["index_interpretation"] not in INDEX_INTERPRETATIONS:
        raise UserError(
            f"shot manifest '{path}' has index_interpretation '{header['index_interpretation']}': "
            f"use one of {', '.join(INDEX_INTERPRETATIONS)}"
        )
    return ShotManifest(
        name=header["manifest"],
        version=version,
        dataset=header["dataset"],
        k=k,
        seed=header["seed"] if seed is None else seed,
        source=header["source"],
        index_interpretation=header["index_interpretation"],
        entries=entries,
    )


def _check_entries(manifest: ShotManifest) -> None:
    """Dataset-free checks: categories grouped, paths unique per category, exactly k paths per listed category."""
    groups = [category for position, (category, _) in enumerate(manifest.entries)
              if position == 0 or manifest.entries[position - 1][0] != category]
    order = list(dict.fromkeys(groups))
    if len(order) != len(groups):
        raise UserError(f"shot manifest {manifest.label} lists a category in several places: group its lines")
    for category in order:
        paths = manifest.paths(category)
        duplicates = [path for path, count in Counter(paths).items() if count > 1]
        if duplicates:
            raise UserError(
                f"shot manifest {manifest.label} lists '{duplicates[0]}' twice for category '{category}': "
                "remove the duplicate"
            )
        if len(paths) != manifest.k:
            raise UserError(
                f"shot manifest {manifest.label} lists {len(paths)} references for category '{category}': "
                f"list exactly k={manifest.k}"
            )


def _first_counters(index: DatasetIndex) -> dict[str, int]:
    """DictAS's global counter value at the first image of each category (see `import_dictas`)."""
    first, total = {}, 0
    for category in index.categories:
        first[category] = total
        total += len(index.normal_train(category)) + len(index.split(category, "test"))
    return first


def _at_position(pool: list[Sample], position: int) -> list[str]:
    """``[rel_path]`` of ``pool[position]``, or ``[]`` when out of range."""
    return [pool[position].rel_path] if 0 <= position < len(pool) else []


def _promptad_indices(seed_file: Path, k: int) -> list[int]:
    for line in _read_lines(seed_file):
        match = _PROMPTAD_LINE.fullmatch(line)
        if match and int(match[1]) == k:
            try:
                return [int(token) for token in match[2].split()]
            except ValueError:
                break
    raise UserError(f"'{seed_file}' has no valid '#{k}: i j …' line: use a seed file with a k={k} entry")


def _read_lines(path: Path) -> list[str]:
    """Non-blank, stripped lines of a text file."""
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise UserError(f"shot list '{path}' not found: check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read shot list '{path}' ({exc}): check the file") from exc
