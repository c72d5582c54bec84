"""Property-based fuzzing of the whole API from its OpenAPI document (schemathesis): whatever
the generated request, valid by the schema or deliberately not, the service never answers 5xx.

Driven through Hypothesis directly (schemathesis' pytest plugin does not support pytest 9)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from test_serving_support import ToyContent, admin_key, make_store, train_content

from kinrec.serving.app import create_app
from kinrec.serving.config import ServingConfig
from kinrec.serving.engine import Engine
from kinrec.serving.keys import KeyRing
from kinrec.store import Store

EXAMPLES = 20


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fuzz")
    url = make_store(root)
    config = ServingConfig(model_dir=train_content(root, url), db=url, log_requests=False)
    engine = Engine.open(config, model_cls=ToyContent)  # it can also add items: all paths run
    key = admin_key(url)
    app = create_app(engine=engine, keyring=KeyRing(Store(url)), config=config)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    return {"operations": operations, "headers": {"Authorization": f"Bearer {key}"}}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_never_answers_5xx(service: dict, mode: GenerationMode) -> None:
    operations = service["operations"]
    assert len(operations) >= 14
    tried = []
    for operation in operations:
        if operation.path in ("/metrics",) and mode is GenerationMode.NEGATIVE:
            continue  # nothing to get wrong there

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            response = case.call_and_validate(
                headers=service["headers"], checks=[not_a_server_error]
            )
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)

        try:
            run()
        except Exception as exc:  # the strategy may find nothing to negate for this operation
            if "Unsatisfiable" in type(exc).__name__ or "unsatisfiable" in str(exc).lower():
                continue
            raise
        tried.append(f"{operation.method.upper()} {operation.path}")
    assert len(tried) >= 10, tried
