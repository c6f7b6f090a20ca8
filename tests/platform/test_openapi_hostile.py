"""OpenAPI import of hostile documents (api.md: limits on size, nesting and `$ref` depth; a
hostile document -> 400 or 413, never a hang or a 500). No test here may reach the network
(the `no_network` fixture of tests/platform/conftest.py fails any that tries); each runs under a short timeout."""

from __future__ import annotations

import copy
import gc
import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator.validation.validators import SpecValidator

from flowplane.domain.api_definition import parse_api_definition
from flowplane.errors import BadRequest, FlowplaneError, PayloadTooLarge
from flowplane.platform.openapi import ImportLimits, import_openapi
from tests.platform.openapi_helpers import data, doc, refusal, refused, run

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("no_network")]

# --- size, encoding, shape --------------------------------------------------------------------


def test_a_body_over_the_size_limit_is_413_before_parsing() -> None:
    body = b"{" + b" " * ImportLimits().max_bytes + b"}"
    assert "at most 5242880" in refusal(body, error=PayloadTooLarge).message


@pytest.mark.parametrize(
    "body",
    [b'{"openapi": "3.0.3", "info": {"title": "\xff"}}', '{"openapi": "3.0.3"}'.encode("utf-16")],
)
def test_a_body_that_is_not_utf8_is_refused(body: bytes) -> None:
    assert refusal(body).message == "the document is not UTF-8"


def test_a_utf8_byte_order_mark_is_allowed() -> None:
    assert run(b"\xef\xbb\xbf" + json.dumps(doc()).encode()).definition["name"] == "pets-api"


@pytest.mark.parametrize("body", ["[]", '"openapi"', "null", "42", "- a\n- b\n"])
def test_a_document_that_is_not_an_object_is_refused(body: str) -> None:
    assert refused(body, "application/yaml") == {"": "must be an object, not " + _what(body)}


def _what(body: str) -> str:
    return {"[]": "an array", '"openapi"': "a string", "null": "null", "42": "a number"}.get(
        body, "an array"
    )


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ('{"openapi": ', "application/json", "not valid JSON"),
        ('{"a": NaN}', "application/json", "not valid JSON"),
        ('{"a": -Infinity}', "application/json", "not valid JSON"),
        ("a: [1, 2\n", "application/yaml", "not valid YAML"),
        ("a: 1\n---\nb: 2\n", "application/yaml", "not valid YAML"),  # two documents
        ("a: !!python/name:os.system\n", "application/yaml", "not valid YAML"),
        ("a: !!python/object/apply:builtins.len [[1]]\n", "application/yaml", "not valid YAML"),
    ],
)
def test_unparseable_documents_are_refused(body: str, content_type: str, message: str) -> None:
    """YAML is loaded with the safe loader: no Python object is ever constructed."""
    assert message in refusal(body, content_type).message


@pytest.mark.parametrize(
    ("yaml_value", "pointer"),
    [
        ("!!binary aGk=", "/x-a"),
        ("!!set {a, b}", "/x-a"),
        ("!!timestamp 2024-01-01", "/x-a"),
        (".nan", "/x-a"),
        ("{true: x}", "/x-a/True"),
        ("{1.5: x}", "/x-a/1.5"),
    ],
)
def test_yaml_values_that_are_not_json_are_refused_by_pointer(
    yaml_value: str, pointer: str
) -> None:
    text = yaml.safe_dump(doc()) + f"x-a: {yaml_value}\n"
    assert list(refused(text, "application/yaml")) == [pointer]


def test_an_unhashable_yaml_key_is_refused() -> None:
    text = yaml.safe_dump(doc()) + "x-a: {[1, 2]: x}\n"
    assert refusal(text, "application/yaml").message == "the document is not valid YAML"


# --- nesting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("[" * 100_000 + "]" * 100_000, "application/json"),
        ("[" * 100_000 + "]" * 100_000, "application/yaml"),  # flow style
        ("- " * 100_000 + "x", "application/yaml"),  # block style
    ],
)
def test_parser_level_nesting_is_refused(body: str, content_type: str) -> None:
    assert refusal(body, content_type).message in {
        "the document is nested too deeply",
        "the document is not valid YAML",  # libyaml's own limit (1000 levels)
    }


def test_nesting_deeper_than_the_limit_is_refused_at_its_pointer() -> None:
    deep: Any = "x"
    for _ in range(70):
        deep = {"a": deep}
    problems = refused(doc(**{"x-deep": deep}))
    [(where, message)] = problems.items()
    assert where == "/x-deep" + "/a" * 63 and message == "more than 64 nested objects or arrays"


# --- YAML aliases -----------------------------------------------------------------------------


def test_an_alias_bomb_is_refused_without_expanding_it() -> None:
    """ "Billion laughs": 9 aliases per level, 30 levels (9**30 values once expanded). Aliases
    share one object in memory; the walk counts the expanded size and stops at the budget."""
    lines = ['openapi: "3.0.3"', "x-a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"x-a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 30)]
    err = refusal("\n".join(lines), "application/yaml", error=PayloadTooLarge)
    assert "more than 250000 values" in err.message


def test_an_alias_to_its_own_ancestor_is_too_deep() -> None:
    assert (
        refusal("a: &a [*a]\n", "application/yaml").message == "the document is nested too deeply"
    )


# --- $ref -------------------------------------------------------------------------------------


def _with_schemas(**schemas: Any) -> dict[str, Any]:
    document = doc(components={"schemas": schemas})
    document["paths"]["/pets"]["get"]["responses"]["200"]["content"] = {
        "application/json": {"schema": {"$ref": "#/components/schemas/A"}}
    }
    return document


REF = "/paths/~1pets/get/responses/200/content/application~1json/schema/$ref"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("https://evil.example/pet.json", "only references within the document"),
        ("http://169.254.169.254/latest/meta-data", "only references within the document"),
        ("file:///etc/passwd", "only references within the document"),
        ("pet.yaml#/Pet", "only references within the document"),
        ("#/components/schemas/Missing", "points at nothing"),
        ("#/components/schemas/A/properties/b", "points at nothing"),
        ("#Pet", "by anchor name"),
    ],
)
def test_references_outside_the_document_or_to_nothing_are_refused(
    target: str, message: str
) -> None:
    document = _with_schemas(A={"type": "object"})
    document["paths"]["/pets"]["get"]["responses"]["200"]["content"]["application/json"]["schema"][
        "$ref"
    ] = target
    problems = refused(document)
    assert list(problems) == [REF] and message in problems[REF]


def test_reference_cycles_are_refused() -> None:
    problems = refused(
        _with_schemas(A={"$ref": "#/components/schemas/B"}, B={"$ref": "#/components/schemas/A"})
    )
    assert problems[REF] == (
        "reference cycle: #/components/schemas/A -> #/components/schemas/B -> #/components/schemas/A"
    )
    assert set(problems) == {REF, "/components/schemas/A/$ref", "/components/schemas/B/$ref"}


def test_a_reference_to_itself_is_a_cycle() -> None:
    problems = refused(_with_schemas(A={"$ref": "#/components/schemas/A"}))
    assert "reference cycle" in problems["/components/schemas/A/$ref"]


def test_a_path_item_reference_cycle_is_refused() -> None:
    document = doc(openapi="3.1.0", paths={"/pets": {"$ref": "#/paths/~1pets"}})
    assert "reference cycle" in refused(document)["/paths/~1pets/$ref"]


def test_reference_chains_longer_than_the_limit_are_refused() -> None:
    schemas = {f"S{i}": {"$ref": f"#/components/schemas/S{i + 1}"} for i in range(20)}
    schemas["S20"] = {"type": "string"}
    schemas["A"] = {"$ref": "#/components/schemas/S0"}
    assert "more than 16 references in a row" in refused(_with_schemas(**schemas))[REF]


def test_recursive_schemas_are_fine() -> None:
    """A schema that contains itself (a tree) is not a cycle of references."""
    tree = {
        "type": "object",
        "properties": {"children": {"type": "array", "items": {"$ref": "#/components/schemas/A"}}},
    }
    assert run(_with_schemas(A=tree)).definition["routes"]


def test_literal_data_is_not_followed() -> None:
    """`$ref` inside examples, enums and x- extensions is text, not a reference."""
    quoted = {"$ref": "https://evil.example/x.json"}
    schema = {"type": "object", "example": quoted, "enum": [quoted], "x-q": quoted}
    document = _with_schemas(A=schema)
    document["paths"]["/pets"]["get"]["responses"]["200"]["content"]["application/json"][
        "examples"
    ] = {"one": {"value": quoted}}
    assert run(document).definition["routes"]


OUTSIDE = "refers to 'https://evil.example/s.json', outside the document (nothing is fetched)"


def test_a_default_holding_a_remote_reference_is_refused_without_fetching() -> None:
    """The validator reads a schema's `default` through its reference resolver (the value is
    literal data, but the library resolves it): refused, and nothing is fetched."""
    schema = {"type": "object", "default": {"$ref": "https://evil.example/s.json"}}
    assert set(refused(_with_schemas(A=schema)).values()) == {OUTSIDE}


def test_a_remote_reference_the_pre_check_cannot_see_is_refused_by_the_validator() -> None:
    """A property called `example` is skipped by the pre-check (it looks like literal data);
    the validator's resolver then refuses to fetch (second line of defence)."""
    schema = {"type": "object", "properties": {"example": {"$ref": "https://evil.example/s.json"}}}
    problems = refused(_with_schemas(A=schema))
    assert "/paths/~1pets" in problems  # the walk reaches it from the operation first
    assert set(problems.values()) == {OUTSIDE}


def test_an_id_cannot_move_references_off_the_document() -> None:
    """3.1 `$id` changes the base of `#/...` references below it: still nothing is fetched."""
    schema = {
        "$id": "https://evil.example/schemas/a",
        "type": "object",
        "properties": {"q": {"$ref": "#/$defs/q"}},
        "$defs": {"q": {"type": "string"}},
    }
    problems = refused(doc(openapi="3.1.0", components={"schemas": {"A": schema}}))
    assert list(problems) in (
        ["/components/schemas/A/properties/q/$ref"],
        ["/components/schemas/A"],
    )


def test_an_unknown_json_schema_dialect_is_refused_without_fetching_it() -> None:
    document = doc(openapi="3.1.0", jsonSchemaDialect="https://evil.example/dialect",
                   components={"schemas": {"A": {"type": "string"}}})  # fmt: skip
    assert "Unknown JSON Schema dialect" in refused(document)["/components/schemas/A"]


# --- expensive validation ---------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_an_exponential_allof_chain_with_defaults_is_cheap() -> None:
    """Each schema is allOf [next, next] (2**40 paths) and has a default: the library would
    check the default through every path, and collect property names through every path."""
    n = 40
    schemas = {
        f"S{i}": {
            "allOf": [{"$ref": f"#/components/schemas/S{i + 1}"}] * 2,
            "required": ["x"],
            "default": {},
        }
        for i in range(n)
    }
    schemas[f"S{n}"] = {"type": "object", "properties": {"x": {"type": "string"}}}
    schemas["A"] = {"$ref": "#/components/schemas/S0"}
    assert run(_with_schemas(**schemas)).definition["routes"]


@pytest.mark.timeout(10)
def test_a_catastrophic_pattern_is_never_run_against_a_default() -> None:
    schema = {"type": "string", "pattern": "^(a+)+$", "default": "a" * 64 + "!"}
    assert run(_with_schemas(A=schema)).definition["routes"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("version", ["3.0.3", "3.1.0"])
def test_many_objects_under_unique_items_are_checked_in_linear_time(version: str) -> None:
    """jsonschema compares the items of a `uniqueItems` array pairwise: quadratic."""
    n = 4_000
    document = doc(openapi=version, tags=[{"name": f"t{i}"} for i in range(n)])
    document["components"] = {"schemas": {"E": {"enum": [{"a": i} for i in range(n)]}}}
    document["paths"]["/pets"]["get"]["parameters"] = [
        {"name": f"q{i}", "in": "query", "schema": {"type": "string"}} for i in range(n // 10)
    ]
    assert run(document).definition["routes"]


@pytest.mark.timeout(20)
def test_many_schemas_are_checked_in_linear_time() -> None:
    """The library remembers visited schemas in lists: quadratic in the number of schemas."""
    schemas = {f"S{i}": {"type": "string"} for i in range(10_000)}
    schemas["A"] = {"type": "string"}
    assert run(_with_schemas(**schemas)).definition["routes"]


def test_validation_has_a_step_budget() -> None:
    """The work of validating grows with the document, and some objects cost far more than
    others (a 3.1 parameter ~1 ms): past `max_validation_steps` -> 413."""
    err = refusal(data("box-openapi.json.gz"), error=PayloadTooLarge,
                  limits=ImportLimits(max_validation_steps=10_000))  # fmt: skip
    assert "more than 10000 validation steps" in err.message
    assert run(data("box-openapi.json.gz"), limits=ImportLimits(max_validation_steps=60_000))


def test_schema_references_nested_too_deeply_are_refused() -> None:
    n = 3_000  # each schema's property is the next schema: deeper than Python's recursion limit
    schemas = {
        f"S{i}": {"type": "object", "properties": {"x": {"$ref": f"#/components/schemas/S{i + 1}"}}}
        for i in range(n)
    }
    schemas[f"S{n}"] = {"type": "string"}
    schemas["A"] = {"$ref": "#/components/schemas/S0"}
    problems = refused(_with_schemas(**schemas))
    assert "schemas nest too deeply (through $ref)" in problems.values()


def test_too_many_operations_are_refused_before_validation() -> None:
    """The operation count is checked first (cheap), even in an otherwise invalid document."""
    paths = {f"/p{i}": {"get": {}} for i in range(11)}  # invalid: no responses
    problems = refused(doc(paths=paths), limits=ImportLimits(max_operations=10))
    assert problems == {"/paths": "11 operations; at most 10 can be imported"}


def test_the_problem_list_is_bounded() -> None:
    paths = {f"/p{i}": {"get": {}} for i in range(300)}  # 300 missing `responses`
    assert len(refusal(doc(paths=paths)).details) == ImportLimits().max_problems


def test_no_validator_outlives_the_import() -> None:
    """The library memoises `iter_errors` per validator instance in an unbounded lru_cache
    (keeping every document alive); the import never calls it."""
    run(data("petstore.json"))
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, SpecValidator)]


# --- anything at all --------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_PETSTORE = json.loads(data("petstore.json"))
_KEYS = st.sampled_from(["$ref", "servers", "url", "x-flowplane-cors", "x-flowplane-ratelimit",
                         "paths", "/pets", "get", "parameters", "openapi", "variables", "#/"])  # fmt: skip


def _locations(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _locations(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _locations(v, (*path, i))
    return out


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(data=st.data())
def test_any_mutation_of_a_valid_document_imports_or_is_refused(data: st.DataObject) -> None:
    """Replace or add random values anywhere in the petstore: the import either succeeds with a
    definition the API definition model accepts, or raises a FlowplaneError with status 400 or
    413, never anything else."""
    document = copy.deepcopy(_PETSTORE)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(_locations(document)))
        value = data.draw(_json | st.builds(lambda k, v: {k: v}, _KEYS, _json))
        if not where:
            continue
        parent = document
        for part in where[:-1]:
            parent = parent[part]
        parent[where[-1]] = value
    outcome = _outcome(document)
    if outcome is not None:
        assert outcome.status in (400, 413), outcome
        assert isinstance(outcome, BadRequest | PayloadTooLarge)
        assert outcome.details or outcome.status == 413


def _outcome(document: dict[str, Any]) -> FlowplaneError | None:
    try:
        result = import_openapi(json.dumps(document).encode(), "application/json", name=None,
                                team=None, domain=None, listener_isolation=False, port=None)  # fmt: skip
    except FlowplaneError as err:
        return err
    parse_api_definition(result.definition)  # what the import makes, the model accepts
    return None
