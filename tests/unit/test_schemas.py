"""The wire contract: round trips, unknown fields refused, limits named."""

import pytest
from pydantic import ValidationError

from schemas.jobs import JOB_MODELS, KINDS, parse_job
from schemas.limits import Limits


def test_every_kind_round_trips_with_defaults():
    assert set(JOB_MODELS) == set(KINDS)
    job = parse_job({"kind": "attribution", "model": "smollm2-135m", "input": {"prompt": "a", "target": "b"}})
    again = parse_job(job.model_dump(mode="json"))
    assert again == job and again.params.n_steps == 50 and again.params.rule == "gausslegendre"


@pytest.mark.parametrize("body,field", [
    ({"kind": "generate", "model": "m", "input": {"prompt": "a"}, "extra": 1}, "extra"),
    ({"kind": "generate", "model": "m", "input": {"prompt": "a", "colour": "red"}}, "colour"),
    ({"kind": "generate", "model": "m", "input": {"prompt": ""}}, "prompt"),
    ({"kind": "generate", "model": "m", "input": {}}, "input"),
    ({"kind": "generate", "model": "m", "input": {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}}, "input"),
    ({"kind": "attribution", "model": "m", "input": {"prompt": "a"}, "params": {"n_steps": 0}}, "n_steps"),
    ({"kind": "attribution", "model": "m", "input": {"prompt": "a"}, "params": {"method": "saliency", "n_steps": "auto"}}, "params"),
    ({"kind": "nope", "model": "m", "input": {"prompt": "a"}}, "kind"),
])
def test_bad_requests_name_the_field(body, field):
    with pytest.raises(ValidationError) as e:
        parse_job(body)
    assert field in str(e.value)


def test_setting_limits_name_the_limit():
    job = parse_job({"kind": "attribution", "model": "m", "input": {"prompt": "a"},
                     "params": {"n_steps": 600, "max_new_tokens": 200}})
    errors = job.over_limits(Limits(max_steps=512, max_new_tokens=100))
    assert [e.loc for e in errors] == [["params", "n_steps"], ["params", "max_new_tokens"]]
    assert errors[0].ctx["limit"] == "max_steps" and errors[0].ctx["limit_value"] == 512


def test_every_kind_has_a_method_that_follows_the_protocol():
    """run(lm, job: <Kind>Job, ctx: Context) -> <Kind>Result, for every kind in the registry."""
    import inspect

    from workers.registry import METHODS

    assert METHODS.keys() == KINDS.keys()
    for kind, module in METHODS.items():
        sig = inspect.signature(module.run)
        assert list(sig.parameters) == ["lm", "job", "ctx"], kind
        assert str(sig.parameters["job"].annotation) == KINDS[kind].job.__name__, kind
        assert str(sig.parameters["ctx"].annotation) == "Context", kind
        assert str(sig.return_annotation) == KINDS[kind].result.__name__, kind
