"""OpenAPI 3.0 / 3.1 validation with `openapi-spec-validator`, made safe for hostile documents.

The library checks a document against the official OpenAPI schema (through `jsonschema`) and then
walks it for what a schema cannot say (duplicate operationIds, undeclared path parameters, each
schema object valid JSON Schema, ...). Used as it ships it is not safe for an untrusted document;
these are the changes, each checked by tests/platform/test_openapi_hostile.py:

- No network, no files: its reference resolver fetches any `http(s)://` or `file://` `$ref` (and
  passes anything else to `urlopen`). It gets a handler table that refuses every scheme, and
  every `jsonschema` validator here a registry of the meta-schemas the libraries ship that
  retrieves nothing. (The importer refuses non-local references before validation: this is
  the second line.)
- No global state: `iter_errors` is memoised per validator *instance* with an unbounded
  `lru_cache`, which keeps every validated document alive for the life of the process. The walk
  is driven here instead (the same steps as the library's root validator), which also gives each
  problem the JSON pointer of the path item or schema it was found in.
- No `default` checks: the library validates each schema's `default` against the schema, which
  runs the document's `pattern` regexes (Python `re`, backtracking: a ReDoS) and evaluates
  `allOf` chains of references without memoisation (exponential in their length). A default
  value has no bearing on routing.
- Linear, not quadratic or exponential: the schema walk remembers visited schemas in lists
  (quadratic in the number of schemas) and collects `allOf` property names without memoisation
  (exponential again); both are replaced by memoised, set-backed versions. `jsonschema` checks
  `uniqueItems` of objects pairwise (8,000 `tags` or `enum` objects: 40-50 s): a linear version
  replaces it. The OpenAPI 3.1 schema is crawled once, not at each `$dynamicRef` (one per schema
  object in the document, ~2 ms each). Each dialect's meta-schema validator is built once (the
  library builds one per schema).
- Bounded: every `jsonschema` step is counted, and a document that needs more than
  `ImportLimits.max_validation_steps` is refused (413), whatever makes it expensive.
- The backend is fixed (`jsonschema`), not chosen by an environment variable at first use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, Final, NoReturn

import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import extend, validator_for
from jsonschema_path import SchemaPath
from openapi_schema_validator._specifications import REGISTRY as OPENAPI_SPECIFICATIONS
from openapi_schema_validator.validators import OAS30Validator
from openapi_spec_validator.schemas import schema_v30, schema_v31
from openapi_spec_validator.validation.keywords import (
    OpenAPIV30SchemaValidator,
    OpenAPIV30ValueValidator,
    OpenAPIV31SchemaValidator,
    OpenAPIV31ValueValidator,
)
from openapi_spec_validator.validation.validators import (
    OpenAPIV30SpecValidator,
    OpenAPIV31SpecValidator,
    SpecValidator,
)

from flowplane.errors import FieldProblem, PayloadTooLarge
from flowplane.platform.openapi_document import ImportLimits, pointer

_MESSAGE_LIMIT: Final = 300  # jsonschema quotes the offending value, which may be huge


class RemoteReferenceRefused(Exception):
    """The validator tried to read something outside the document."""


def _refuse(uri: str) -> NoReturn:
    raise RemoteReferenceRefused(uri)


class _NoFetch(Mapping[str, Any]):
    """A resolver handler table with an entry for every URI scheme, each refusing."""

    def __getitem__(self, scheme: str) -> Any:
        return _refuse

    def __contains__(self, scheme: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


_NO_FETCH: Final = _NoFetch()


class _IdSet(list[int]):
    """The schema walk's visited registries: a list to the library, a set underneath."""

    def __init__(self) -> None:
        super().__init__()
        self._ids: set[int] = set()

    def append(self, item: int) -> None:
        self._ids.add(item)

    def __contains__(self, item: object) -> bool:
        return item in self._ids


class _SafeSchemaWalk:
    """Mixed into the library's schema keyword validators (see the module docstring)."""

    visited_schema_ids: list[int] | None
    meta_checked_schema_ids: list[int] | None

    def _init_safe(self) -> None:
        self.visited_schema_ids = _IdSet()
        self.meta_checked_schema_ids = _IdSet()
        self._properties: dict[int, frozenset[str]] = {}
        self._collecting: set[int] = set()

    def _collect_properties(self, schema: SchemaPath) -> set[str]:
        value = schema.read_value()
        key = id(value)
        if key in self._properties:
            return set(self._properties[key])
        if key in self._collecting:  # a schema that contains itself adds nothing new
            return set()
        self._collecting.add(key)
        props: set[str] = set()
        if "properties" in schema:
            props.update(str(k) for k in (schema / "properties").keys())  # noqa: SIM118 (a SchemaPath)
        for kw in ("allOf", "anyOf", "oneOf"):
            if kw in schema:
                for sub in schema / kw:
                    props |= self._collect_properties(sub)
        for kw in ("items", "not"):
            if kw in schema:
                props |= self._collect_properties(schema / kw)
        self._collecting.discard(key)
        self._properties[key] = frozenset(props)
        return props


def _unique_items(
    validator: Validator, unique: bool, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    """`uniqueItems` in linear time. jsonschema compares unhashable items pairwise: quadratic,
    and minutes for a few thousand `parameters`, `tags` or `enum` objects. Items are equal when
    their canonical JSON is (1 and 1.0 count as different: the only difference, and harmless)."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[str] = set()
    for item in instance:
        key = json.dumps(item, sort_keys=True)
        if key in seen:
            yield ValidationError(f"has non-unique elements ({_short(key)} twice)")
            return
        seen.add(key)


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


class ValidationBudgetExceeded(Exception):
    """The document needs more validation work than `ImportLimits.max_validation_steps`."""


@dataclass
class _Budget:
    left: int


_BUDGET: ContextVar[_Budget | None] = ContextVar("openapi_validation_budget", default=None)
# The keywords every step of `jsonschema` passes through (into an object, an array, a reference).
_COUNTED: Final = ("$ref", "$dynamicRef", "properties", "items", "prefixItems")


def _counted(keyword: Callable[..., Any]) -> Callable[..., Iterator[ValidationError]]:
    def counted(
        validator: Validator, value: Any, instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        budget = _BUDGET.get()
        if budget is not None:
            budget.left -= 1
            if budget.left < 0:
                raise ValidationBudgetExceeded
        yield from keyword(validator, value, instance, schema)

    return counted


def _safe(cls: Any) -> Any:
    """`cls` (a jsonschema validator class) with a linear `uniqueItems` and its steps counted."""
    changes: dict[str, Any] = {"uniqueItems": _unique_items}
    for name in _COUNTED:
        if name in cls.VALIDATORS:
            changes[name] = _counted(cls.VALIDATORS[name])
    return extend(cls, changes)


def _without_dialect(contents: Any) -> Any:
    return {k: v for k, v in contents.items() if k != "$schema"}


@cache
def _meta_registry() -> referencing.Registry[Any]:
    """The meta-schemas the libraries ship, each without its `$schema`. jsonschema picks the
    validator class of every subschema that names a `$schema` afresh (its stock class), which
    would leave `_safe`'s class at the first reference; without them, `_safe`'s class validates
    all the way down."""
    resources = []
    for uri in OPENAPI_SPECIFICATIONS:
        contents = OPENAPI_SPECIFICATIONS[uri].contents
        if isinstance(contents, dict) and isinstance(contents.get("$schema"), str):
            dialect = referencing.jsonschema.specification_with(contents["$schema"])
            resources.append((uri, dialect.create_resource(_without_dialect(contents))))
        else:
            resources.append((uri, OPENAPI_SPECIFICATIONS[uri]))
    return referencing.Registry().with_resources(resources).crawl()


@cache
def _metaschema_validator(cls: Any, format_checker: Any) -> Validator:
    """A validator of schemas written for `cls` (a schema dialect), built once: the library
    builds one per schema checked. Resolves only the meta-schemas the libraries ship."""
    meta = cls.META_SCHEMA
    dialect = referencing.jsonschema.specification_with(
        meta.get("$schema", ""), default=referencing.jsonschema.DRAFT202012
    )
    meta_cls = _safe(validator_for(meta, default=cls))
    root = dialect.create_resource(_without_dialect(meta))
    resolver = _meta_registry().resolver_with_root(root)
    validator: Validator = meta_cls(
        root.contents, format_checker=format_checker, _resolver=resolver
    )
    return validator


def _check_schema(cls: Any, format_checker: Any, value: Any) -> None:
    for error in _metaschema_validator(cls, format_checker).iter_errors(value):
        raise SchemaError.create_from(error)


class _Schema30(_SafeSchemaWalk, OpenAPIV30SchemaValidator):
    def __init__(self, registry: Any) -> None:
        super().__init__(registry)
        self._init_safe()

    def _get_schema_checker(self, schema: SchemaPath, schema_value: Any) -> Callable[[Any], None]:
        return partial(_check_schema, OAS30Validator, OAS30Validator.FORMAT_CHECKER)


class _Schema31(_SafeSchemaWalk, OpenAPIV31SchemaValidator):
    def __init__(self, registry: Any) -> None:
        super().__init__(registry)
        self._init_safe()

    def _get_schema_checker(self, schema: SchemaPath, schema_value: Any) -> Callable[[Any], None]:
        # As the library does: the schema's `$schema`, else the document's jsonSchemaDialect.
        dialect = self._get_schema_dialect_id(schema, schema_value)
        cls = self._get_validator_class_for_dialect(dialect)
        if cls is None:
            raise ValueError(f"Unknown JSON Schema dialect: {dialect!r}")
        return partial(_check_schema, cls, self.schema_validator_format_checker)


class _NoDefault30(OpenAPIV30ValueValidator):
    def __call__(self, schema: SchemaPath, value: Any) -> Iterator[ValidationError]:
        return iter(())


class _NoDefault31(OpenAPIV31ValueValidator):
    def __call__(self, schema: SchemaPath, value: Any) -> Iterator[ValidationError]:
        return iter(())


@cache
def _document_schema_validator(version: str) -> Validator:
    """The OpenAPI schema of `version` as a `jsonschema` validator that retrieves nothing."""
    schema = dict(schema_v30 if version == "3.0" else schema_v31)
    cls = _safe(validator_for(schema))
    # Registered and crawled up front: uncrawled, every `$dynamicRef` of the 3.1 schema (one per
    # schema object in the document) crawls the whole OpenAPI schema again (~2 ms each).
    resource = referencing.jsonschema.specification_with(schema["$schema"]).create_resource(schema)
    registry = _meta_registry().with_resource(resource.id() or "", resource).crawl()
    validator: Validator = cls(schema, _resolver=registry.resolver_with_root(resource))
    return validator


class _Spec30(OpenAPIV30SpecValidator):
    resolver_handlers = _NO_FETCH  # type: ignore[assignment]
    keyword_validators = {  # noqa: RUF012 (the library reads this dict)
        **OpenAPIV30SpecValidator.keyword_validators,
        "schema": _Schema30,
        "default": _NoDefault30,
    }


class _Spec31(OpenAPIV31SpecValidator):
    resolver_handlers = _NO_FETCH  # type: ignore[assignment]
    keyword_validators = {  # noqa: RUF012 (the library reads this dict)
        **OpenAPIV31SpecValidator.keyword_validators,
        "schema": _Schema31,
        "default": _NoDefault31,
    }


def _message(err: Exception) -> str:
    text = " ".join(str(getattr(err, "message", err)).split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _refused_in(err: BaseException) -> RemoteReferenceRefused | None:
    """The refusal behind a resolver error (referencing wraps it twice), if it is one."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, RemoteReferenceRefused):
        cause = cause.__cause__
    return cause


def _outside(err: RemoteReferenceRefused) -> str:
    return f"refers to {err.args[0]!r}, outside the document (nothing is fetched)"


def _steps(spec: SpecValidator) -> Iterator[tuple[str, Iterator[ValidationError]]]:
    """The library's root validation, one step per part of the document, each with the pointer
    of that part: tags, each path item, each component schema."""
    registry = spec.keyword_validators_registry
    root = spec.schema_path
    if "tags" in root:
        yield pointer("tags"), registry["tags"](root / "tags")  # type: ignore[operator]
    if "paths" in root:
        for url, item in (root / "paths").items():
            yield pointer("paths", str(url)), registry["path"](str(url), item)  # type: ignore[operator]
    if "components" in root and "schemas" in (root / "components"):
        for name, schema in (root / "components" / "schemas").items():
            yield pointer("components", "schemas", str(name)), registry["schema"](schema)  # type: ignore[operator]


def validate(doc: dict[str, Any], version: str, limits: ImportLimits) -> list[FieldProblem]:
    """Every problem the validator finds in `doc` (an OpenAPI `version` "3.0" or "3.1" document
    whose references were checked by `openapi_document.check_refs`), at most
    `limits.max_problems`. Never reads anything outside `doc`. A document that needs more than
    `limits.max_validation_steps` steps of `jsonschema` -> PayloadTooLarge (413)."""
    token = _BUDGET.set(_Budget(limits.max_validation_steps))
    try:
        return _validate(doc, version, limits)
    except ValidationBudgetExceeded:
        raise PayloadTooLarge(
            "the document is too large to validate: it needs more than "
            f"{limits.max_validation_steps} validation steps"
        ) from None
    finally:
        _BUDGET.reset(token)


def _validate(doc: dict[str, Any], version: str, limits: ImportLimits) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    for err in _document_schema_validator(version).iter_errors(doc):
        detail = best_match([err])  # the most specific error inside a oneOf/anyOf failure
        where = pointer(*detail.absolute_path)
        problems.append(FieldProblem(where, _message(detail)))
        if len(problems) >= limits.max_problems:
            return problems
    if problems:  # the walk below assumes the document has the shape the schema describes
        return problems
    cls = _Spec30 if version == "3.0" else _Spec31
    spec = cls(
        SchemaPath.from_dict(doc, base_uri="", handlers=_NO_FETCH, resolved_cache_maxsize=128)
    )
    for where, errors in _steps(spec):
        try:
            for err in errors:
                problems.append(FieldProblem(where, _message(err)))
                if len(problems) >= limits.max_problems:
                    return problems
        except RemoteReferenceRefused as err:
            problems.append(FieldProblem(where, _outside(err)))
        except referencing.exceptions.Unresolvable as err:
            refused = _refused_in(err)
            if refused is not None:
                problems.append(FieldProblem(where, _outside(refused)))
            else:
                problems.append(
                    FieldProblem(where, f"a reference cannot be resolved: {_message(err)}")
                )
        except RecursionError:
            problems.append(FieldProblem(where, "schemas nest too deeply (through $ref)"))
        except ValidationBudgetExceeded:
            raise
        except Exception as err:  # the library failed on this part of a hostile document
            problems.append(
                FieldProblem(where, f"the validator cannot check this: {_message(err)}")
            )
    return problems
