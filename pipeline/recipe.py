"""Recipes: YAML files that describe a run. Loaded with ``yaml.safe_load``, ``${VAR}``
interpolated from the environment, overridden from the command line, validated in full
(every op name and parameter) before any data is read."""

from __future__ import annotations

import hashlib
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from thresher.pipeline.columns import STATS
from thresher.pipeline.errors import RecipeError, did_you_mean
from thresher.pipeline.ops import FromEnv, Op, OpContext, OpParams
from thresher.pipeline.outdir import expand_path
from thresher.pipeline.registry import get_op, op_names, resolve_alias

INPUT_FORMATS = ("auto", "jsonl", "jsonl.gz", "jsonl.zst", "parquet", "warc", "csv", "tsv")
OUTPUT_FORMATS = ("jsonl", "jsonl.gz", "jsonl.zst", "parquet")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _no_credentials(options: dict[str, Any]) -> dict[str, Any]:
    """storage_options say where a store is; credentials come from the environment (docs/storage.md)."""
    from thresher.pipeline.fs import SECRET_OPTION

    bad = sorted(k for k in options if SECRET_OPTION.search(str(k)))
    if bad:
        from pydantic_core import PydanticCustomError

        raise PydanticCustomError("credentials_in_recipe", "storage_options may not hold credentials ({names}): set "
                                  "them in the environment (AWS_ACCESS_KEY_ID, ...), a profile or the node's role "
                                  "instead", {"names": ", ".join(bad)})
    return options


class InputSpec(_Strict):
    paths: list[str] = Field(description="files, directories or globs; 'demo:quickstart' is the built-in demo corpus")
    format: Literal["auto", "jsonl", "jsonl.gz", "jsonl.zst", "json", "parquet", "warc", "csv", "tsv"] = Field(
        "auto", description="auto: from each file's extension (a .json file holding an array is read as one); "
        "warc yields {id, url, date, html} rows; csv/tsv: a header line, every column read as text")
    text_key: str | None = Field("text", description="column holding the main text; null for data without one "
                                 "(chat and preference data), which only ops that do not read text may process")
    id_key: str = Field("id", description="column holding the row id; rows without one get a stable id")
    shard_size_mb: float = Field(64.0, gt=0, description="plain JSONL and Parquet files bigger than this are split")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="where URL inputs' store is "
                                            "(e.g. endpoint_url, region); never credentials (docs/storage.md)")

    _no_secrets = field_validator("storage_options")(lambda v: _no_credentials(v))

    @field_validator("paths", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("paths")
    @classmethod
    def _expand(cls, v: list[str]) -> list[str]:
        return [p if p.startswith("demo:") else expand_path(p) for p in v]


class OutputSpec(_Strict):
    path: str = Field(description="output directory, or an object-store URL (s3://, gs://, az://; docs/storage.md)")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="where a URL output's store is "
                                            "(e.g. endpoint_url, region); never credentials (docs/storage.md)")

    _no_secrets = field_validator("storage_options")(lambda v: _no_credentials(v))
    format: Literal["jsonl", "jsonl.gz", "jsonl.zst", "parquet"] = "jsonl"
    rows_per_shard: int = Field(100_000, gt=0, description="at most this many rows per output file")
    keep_stats: bool = Field(False, description=f"keep filter stats in a '{STATS}' column")
    report: bool = Field(True, description="write report.html (funnel, stat histograms with thresholds, samples, "
                         "timings) beside the ledger")
    trace_samples: int = Field(20, ge=0, description="dropped rows kept in trace/ per op and per reason: a seeded "
                               "random sample (the same for any workers or executor), with their content")

    @field_validator("path")
    @classmethod
    def _expand(cls, v: str) -> str:
        return expand_path(v)


class PolicySpec(_Strict):
    """When a run counts as failed although it ran to the end. A failed run exits non-zero, writes its
    ledger (for diagnosis) but no ``_SUCCESS``, and keeps its work, so ``--resume`` (with a changed
    policy) can still finish it."""

    max_quarantine_fraction: float = Field(
        0.1, ge=0, le=1, description="fail the run when more than this share of rows (read + created) went to "
        "quarantine: a wrong text_key, format or endpoint shows up as a failure, not as an empty success")


class ExecutorSpec(_Strict):
    type: Literal["local", "ray"] = "local"
    workers: int = Field(0, ge=0, description="processes (local) or parallelism (ray); 0 = all cores")
    # 2 MB (was 4): 100k docs, 2 workers, peak PSS exact 193-209 -> 160-177 MB, Gopher heuristics 329 -> 249-271,
    # MinHash 315-334 -> 287-310, the whole fineweb recipe 343-385 -> 331-336, CPU the same
    # (docs/benchmarks.md, "Workers forked from the driver")
    batch_size_mb: float = Field(2.0, gt=0, description="bytes of input read per batch")
    address: str | None = Field(None, description="Ray cluster address (ray executor); default RAY_ADDRESS or a local Ray")
    model_actors: bool = Field(True, description="ray: run ops that load a model in an actor pool (one model per actor); "
                               "false: in tasks like other ops (less overhead on small machines; see docs/benchmarks.md). "
                               "Unset, on a local Ray the run starts itself: tasks")


class RecipeModel(_Strict):
    name: str = ""
    description: str = ""
    input: InputSpec
    output: OutputSpec
    executor: ExecutorSpec = ExecutorSpec()
    policy: PolicySpec = PolicySpec()
    seed: int = 0
    process: list[Any] = Field(default_factory=list)

    @field_validator("executor", mode="before")
    @classmethod
    def _executor_shorthand(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v


class OpSpec(BaseModel):
    """One validated entry of ``process:``."""

    index: int
    name: str
    key: str
    params: OpParams
    # the op class, resolved where the recipe was parsed: a worker that unpickles the recipe imports
    # only the modules of the recipe's ops, not every operator (and numba) through the registry
    op_cls: Any = Field(None, exclude=True, repr=False)
    model_config = ConfigDict(arbitrary_types_allowed=True)

    def op_class(self) -> type[Op]:
        return self.op_cls or get_op(self.name)

    def build(self, text_key: str, id_key: str, seed: int, run_id: str = "", attempt_id: str = "") -> Op:
        cls = self.op_class()
        ctx = OpContext(text_key=text_key, id_key=id_key, seed=seed, index=self.index, key=self.key, run_id=run_id,
                        attempt_id=attempt_id)
        return cls(self.params, ctx)


class Recipe:
    """A validated recipe: the model, its ops, where it came from."""

    def __init__(self, model: RecipeModel, ops: list[OpSpec], source: str, raw: dict[str, Any]):
        self.model = model
        self.ops = ops
        self.source = source
        self.raw = raw
        self.run_id = ""  # set by the driver from the output's manifest (kept across --resume)
        self.attempt_id = ""  # set by the driver for each invocation
        self.notes: list[str] = []  # deprecations met while loading (former op names)
        self.analysis = False  # thresher analyze: every op sees every row, nothing is dropped
        self.analysis_tokens: str | None = None  # (analysis) tokenizer for tokens per row; None: not counted
        self.analysis_token_share = 1.0  # (analysis) share of rows whose tokens are counted (a seeded sample)
        self.analysis_added: set[str] = set()  # (analysis) ops it added (language_id for --lang)
        self.analysis_options = None  # (analysis) pipeline.analyze.Options

    @property
    def input(self) -> InputSpec:
        return self.model.input

    @property
    def output(self) -> OutputSpec:
        return self.model.output

    @property
    def executor(self) -> ExecutorSpec:
        return self.model.executor

    @property
    def policy(self) -> PolicySpec:
        return self.model.policy

    def build_ops(self) -> list[Op]:
        """The recipe's ops, each followed by the ops it expands into (``Op.expand``)."""
        ops: list[Op] = []
        for s in self.ops:
            if self.input.text_key is None and s.op_class().reads_text and not getattr(s.params, "field", None):
                raise RecipeError(f"{self.source}: process[{s.index}] '{s.name}' reads the text column, but "
                                  "input.text_key is null; set input.text_key to the column holding the text (or the op's field)")
            op = s.build(self.input.text_key or "", self.input.id_key, self.model.seed, self.run_id, self.attempt_id)
            ops.append(op)
            ops.extend(op.expand())
        return ops

    def fingerprint(self) -> str:
        """Hash of everything that decides the output (not workers, not the output path)."""
        body = {k: v for k, v in self.model.model_dump(mode="json").items()
                if k not in ("executor", "policy", "name", "description")}
        body["output"] = {k: v for k, v in body["output"].items() if k not in ("path", "report", "storage_options")}
        body["input"] = {k: v for k, v in body["input"].items() if k != "storage_options"}
        body["process"] = [{s.name: s.params.model_dump(mode="json")} for s in self.ops]
        if self.analysis:
            body["analysis"] = {"tokens": self.analysis_tokens, "token_share": self.analysis_token_share}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- interpolation
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, source: str, where: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string, from the environment."""
    if isinstance(value, dict):
        return {k: interpolate(v, source, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, source, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise RecipeError(f"{source}: {where}: environment variable ${{{name}}} is not set "
                          f"(set it, or write ${{{name}:-default}} in the recipe)")

    if _VAR.fullmatch(value):  # a whole ${VAR}: typed by the parameter that receives it (see FromEnv)
        return FromEnv(_VAR.sub(sub, value))
    return _VAR.sub(sub, value)


# --------------------------------------------------------------------------- overrides
SHORTHANDS = {"executor": "type"}  # top-level keys whose string value is short for {field: value}


def apply_set(raw: dict[str, Any], assignment: str, source: str) -> None:
    """Apply one ``--set a.b.c=value`` (value parsed as YAML, so numbers and booleans work).

    Paths walk mappings by key and lists by index; inside ``process`` an op may also be
    named instead of indexed (``process.text_length_filter.min_chars=10``).
    """
    if "=" not in assignment:
        raise RecipeError(f"--set {assignment!r}: expected key=value")
    path, text = assignment.split("=", 1)
    value = load_yaml(text, f"--set {assignment!r}: value {text!r}") if text else ""
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise RecipeError(f"--set {assignment!r}: empty key")
    node: Any = raw
    for key in keys[:-1]:
        if isinstance(node, list):
            node = _list_step(node, key, assignment)
        elif isinstance(node, dict):
            if key not in node or node[key] is None:
                node[key] = {}
            elif node is raw and key in SHORTHANDS and isinstance(node[key], str):
                node[key] = {SHORTHANDS[key]: node[key]}  # `executor: ray` -> {type: ray}, then set inside it
            node = node[key]
        else:
            raise RecipeError(f"--set {assignment!r}: cannot step into '{key}'")
    last = keys[-1]
    if isinstance(node, list):
        idx = _list_index(node, last, assignment)
        node[idx] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise RecipeError(f"--set {assignment!r}: '{'.'.join(keys[:-1])}' is not a mapping")


def _list_index(node: list, key: str, assignment: str) -> int:
    if key.lstrip("-").isdigit():
        idx = int(key)
        if -len(node) <= idx < len(node):
            return idx
        raise RecipeError(f"--set {assignment!r}: index {idx} out of range (list has {len(node)} items)")
    for i, item in enumerate(node):
        if isinstance(item, dict) and key in item:
            return i
    names = [next(iter(it)) for it in node if isinstance(it, dict) and it]
    raise RecipeError(f"--set {assignment!r}: no op '{key}' in process.{did_you_mean(key, names)}")


def _list_step(node: list, key: str, assignment: str) -> Any:
    item = node[_list_index(node, key, assignment)]
    # process entries are {op_name: params}; naming the op steps into its params
    if isinstance(item, dict) and key in item and not key.lstrip("-").isdigit():
        if item[key] is None:
            item[key] = {}
        return item[key]
    return item


# --------------------------------------------------------------------------- YAML
MAX_ALIAS_NODES = 10_000  # nodes that aliases may add to a document when it is expanded as a tree


class _AliasLimit(Exception):  # noqa: N818
    def __init__(self, line: int, problem: str):
        super().__init__(problem)
        self.line, self.problem = line, problem


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents whose aliases expand too far.

    PyYAML shares one node between an anchor and its aliases, so a few hundred bytes of nested
    aliases ("billion laughs") load quickly into a small shared graph — and then everything that
    walks the recipe as a tree (``${VAR}`` interpolation, validation, the fingerprint) expands it
    exponentially: minutes and gigabytes for a 500-byte file. The expanded size is counted on the
    composed graph before anything is built (memoised, so linear in the distinct nodes), and a
    recursive alias, which would expand forever, is refused too. A few anchors shared by several
    ops add a few hundred nodes at most.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node)
        return super().construct_document(node)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Raise ``_AliasLimit`` at the first node whose tree expansion adds more than
    ``MAX_ALIAS_NODES`` nodes to the document, or that contains itself."""
    distinct: set[int] = set()
    stack = [root]
    while stack:
        n = stack.pop()
        if id(n) not in distinct:
            distinct.add(id(n))
            stack += _children(n)
    limit = len(distinct) + MAX_ALIAS_NODES
    size: dict[int, int] = {}
    open_: set[int] = set()
    stack = [(root, False)]
    while stack:  # iterative post-order: deeply nested YAML must not hit the recursion limit
        n, done = stack.pop()
        if done:
            open_.discard(id(n))
            size[id(n)] = total = 1 + sum(size[id(c)] for c in _children(n))
            if total > limit:
                raise _AliasLimit(n.start_mark.line + 1, f"too many YAML aliases: they expand the document by more "
                                  f"than {MAX_ALIAS_NODES} nodes (limit {MAX_ALIAS_NODES}; an alias bomb?)")
            continue
        if id(n) in size:
            continue
        if id(n) in open_:
            raise _AliasLimit(n.start_mark.line + 1, "recursive YAML alias: the node contains itself")
        open_.add(id(n))
        stack.append((n, True))
        stack += [(c, False) for c in _children(n) if id(c) not in size]


def load_yaml(text: str, source: str) -> Any:
    """YAML text -> Python data, with ``BoundedLoader``; every problem is a ``RecipeError`` that
    names ``source`` and the line (and column) of the problem."""
    try:
        return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except _AliasLimit as e:
        raise RecipeError(f"{source}: line {e.line}: {e.problem}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"{source}:{where}: not valid YAML: {getattr(e, 'problem', e)}") from None


# --------------------------------------------------------------------------- loading
def find_recipe(name_or_path: str) -> Path:
    """A path to a recipe file, or the name of a shipped recipe (``fineweb``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = shipped_recipes()
    stem = p.name[:-5] if p.name.endswith(".yaml") else p.name
    if stem in shipped and not p.parent.parts:
        return shipped[stem]
    hint = did_you_mean(stem, shipped)
    raise RecipeError(f"recipe '{name_or_path}' is neither a file nor a shipped recipe.{hint} "
                      f"Shipped recipes: {', '.join(sorted(shipped))}")


def shipped_recipes() -> dict[str, Path]:
    root = resources.files("thresher.recipes")
    return {Path(str(f)).stem: Path(str(f)) for f in root.iterdir() if str(f).endswith(".yaml")}


def load_recipe(name_or_path: str, sets: list[str] | None = None, *, inputs: list[str] | None = None,
                output: str | None = None, executor: str | None = None,
                workers: int | None = None) -> Recipe:
    path = find_recipe(name_or_path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{source}: cannot read recipe: {e}") from None
    return parse_recipe(text, source, sets, inputs=inputs, output=output, executor=executor, workers=workers)


def parse_recipe(text: str, source: str = "<recipe>", sets: list[str] | None = None, *,
                 inputs: list[str] | None = None, output: str | None = None,
                 executor: str | None = None, workers: int | None = None) -> Recipe:
    raw = load_yaml(text, source)
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a mapping with input, output and process; got {type(raw).__name__}")
    raw = interpolate(raw, source)
    for s in sets or []:
        apply_set(raw, s, source)
    if inputs:
        raw.setdefault("input", {})
        if not isinstance(raw["input"], dict):
            raw["input"] = {}
        raw["input"]["paths"] = list(inputs)
    if output:
        raw.setdefault("output", {})
        raw["output"]["path"] = output
    if executor or workers is not None:
        ex = raw.get("executor") or {}
        ex = {"type": ex} if isinstance(ex, str) else dict(ex)
        if executor:
            ex["type"] = executor
        if workers is not None:
            ex["workers"] = workers
        raw["executor"] = ex
    try:
        model = RecipeModel.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(_explain(e, source, RecipeModel)) from None
    notes: list[str] = []
    ops = _validate_process(model.process, source, notes)
    recipe = Recipe(model, ops, source, raw)
    recipe.notes = notes
    return recipe


def _validate_process(process: list[Any], source: str, notes: list[str]) -> list[OpSpec]:
    known = set(op_names())  # no op module imported but the recipe's (get_op below)
    specs: list[OpSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(process):
        if isinstance(entry, str):
            entry = {entry: {}}
        if not isinstance(entry, dict) or len(entry) != 1:
            raise RecipeError(f"{source}: process[{i}]: expected '- op_name: {{params}}', got {entry!r}")
        (name, params), = entry.items()
        name, note = resolve_alias(name)
        if note:
            notes.append(f"{source}: process[{i}]: {note}")
        if name not in known:
            raise RecipeError(f"{source}: process[{i}]: unknown op '{name}'.{did_you_mean(name, known)} "
                              "Run `thresher ops` for the list.")
        params = params or {}
        if not isinstance(params, dict):
            raise RecipeError(f"{source}: process[{i}] '{name}': parameters must be a mapping, got {params!r}")
        cls = get_op(name)
        try:
            p = cls.Params.model_validate(params)
        except ValidationError as e:
            raise RecipeError(_explain(e, source, cls.Params, f"process[{i}] '{name}'")) from None
        seen[name] = seen.get(name, 0) + 1
        key = name if seen[name] == 1 else f"{name}_{seen[name]}"
        specs.append(OpSpec(index=i, name=name, key=key, params=p, op_cls=cls))
    return specs


def _explain(err: ValidationError, source: str, model: type[BaseModel], where: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        prefix = f"{source}: {where + ': ' if where else ''}"
        if e["type"] == "extra_forbidden":
            owner = _model_at(model, e["loc"][:-1])
            valid = list(owner.model_fields) if owner else []
            name = str(e["loc"][-1])
            lines.append(f"{prefix}parameter '{loc}' is not valid.{did_you_mean(name, valid)} "
                         f"Valid: {', '.join(valid)}")
        elif e["type"] == "missing":
            lines.append(f"{prefix}parameter '{loc}' is required")
        elif e["type"] == "credentials_in_recipe":  # never echo what was given: it is a secret
            lines.append(f"{prefix}parameter '{loc}': {e['msg']}")
        else:
            given = e.get("input")
            lines.append(f"{prefix}parameter '{loc}': {e['msg']} (got {given!r}, {_yaml_kind(given)})")
    return "\n".join(lines)


def _yaml_kind(value: Any) -> str:
    """What YAML made of a value, in YAML's words: ``true`` for an int, or ``"5"`` (quoted) for a
    number, is refused (parameters are strict), and the message should show why."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", type(None): "null",
             list: "a list", dict: "a mapping"}
    return kinds.get(type(value), type(value).__name__)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    cur: Any = model
    for part in loc:
        field = getattr(cur, "model_fields", {}).get(part)
        if field is None:
            return None
        ann = field.annotation
        cur = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if cur is None:
            return None
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None
