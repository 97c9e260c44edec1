"""Weights from a pairwise matrix (SCORE_PAIRWISE) and the policy in GET /v1/policy.

indicators.md v2 ("Pairwise weights"): the weights may come from a 5x5 reciprocal
matrix; a matrix whose CR is 0.10 or more is refused at start. api.md v2: GET
/v1/policy shows the policy in force to dispatchers, auditors and admins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.metrics.policy import IndicatorPolicy, policy_from
from services.metrics.settings import MetricsSettings
from shared.domain.actors import Role
from shared.domain.pairwise import SEEDS_MATRIX
from shared.domain.scoring import DEFAULT_WEIGHTS, SubScore
from shared.settings import CommonSettings
from tests.api.conftest import bearer
from tests.integration.metrics_io import metrics_client

pytestmark = pytest.mark.integration

README = Path(__file__).parents[2] / "README.md"
SEEDS = [list(row) for row in SEEDS_MATRIX]
# Row 0 shifted right i places in row i: lambda_max is the row sum 5.5, so
# CR = (5.5 - 5) / 4 / 1.12 = 0.1116 (tests/unit/test_pairwise.py).
CIRCULANT = [[(1, 2, 1, 1, 0.5)[(j - i) % 5] for j in range(5)] for i in range(5)]


def flat(matrix: Sequence[Sequence[float]]) -> list[float]:
    return [value for row in matrix for value in row]


def readme_matrix() -> str:
    match = re.search(r"^SCORE_PAIRWISE='(.+)'$", README.read_text(), re.MULTILINE)
    assert match is not None, "the README shows a SCORE_PAIRWISE example"
    return match.group(1)


def test_the_readme_matrix_gives_the_seeds_weights_to_2_decimals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCORE_PAIRWISE", readme_matrix())

    policy = policy_from(MetricsSettings())

    assert policy.pairwise is not None
    assert flat(policy.pairwise.matrix) == pytest.approx(flat(SEEDS_MATRIX))
    weights = policy.scoring.weights
    assert {s: round(weights[s], 2) for s in SubScore} == dict(DEFAULT_WEIGHTS)
    assert policy.pairwise.consistency_ratio < 0.10
    # Not the same policy as the rounded weights given directly.
    assert policy.version != IndicatorPolicy().version


def test_a_changed_matrix_changes_the_policy_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCORE_PAIRWISE", json.dumps(SEEDS))
    seeds = policy_from(MetricsSettings()).version
    # efficiency vs satisfaction 2 instead of 3: still consistent enough.
    changed = [list(row) for row in SEEDS]
    changed[3][4], changed[4][3] = 2, 0.5
    monkeypatch.setenv("SCORE_PAIRWISE", json.dumps(changed))

    assert policy_from(MetricsSettings()).version != seeds


@pytest.mark.parametrize(
    ("environment", "complaint"),
    [
        ({"SCORE_PAIRWISE": json.dumps(CIRCULANT)}, r"CR = 0\.1116"),
        (
            {
                "SCORE_PAIRWISE": json.dumps(SEEDS),
                "SCORE_WEIGHTS": json.dumps(dict(DEFAULT_WEIGHTS)),
            },
            "not both",
        ),
        ({"SCORE_PAIRWISE": "[[1]]"}, "5 rows of 5"),
        ({"SCORE_PAIRWISE": json.dumps([[1] * 5] * 6)}, "5 rows of 5"),
        ({"SCORE_PAIRWISE": json.dumps([[1] * 100] * 100)}, "at most 25"),
        ({"SCORE_PAIRWISE": json.dumps(SEEDS).replace("8", "0", 1)}, "positive"),
        ({"SCORE_PAIRWISE": json.dumps(SEEDS).replace("8", "-8", 1)}, "positive"),
        ({"SCORE_PAIRWISE": json.dumps(SEEDS).replace("8", "NaN", 1)}, "positive"),
        ({"SCORE_PAIRWISE": json.dumps(SEEDS).replace("8", "10", 1)}, "Saaty"),
        ({"SCORE_PAIRWISE": json.dumps(SEEDS).replace("8", "7", 1)}, "reciprocals"),
        ({"SCORE_PAIRWISE": '[[1, 2, "1/0", 1, 1]]'}, "pattern"),
        ({"SCORE_PAIRWISE": '[[1, 2, "one", 1, 1]]'}, "pattern"),
        ({"SCORE_PAIRWISE": '{"quality": 1}'}, "list"),
    ],
)
def test_a_matrix_that_cannot_be_a_policy_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], complaint: str
) -> None:
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=complaint):
        MetricsSettings()


async def test_get_policy_shows_the_policy_in_force(settings: CommonSettings) -> None:
    as_role = bearer(settings)
    async with metrics_client(settings, score_pairwise=SEEDS) as client:

        async def get(headers: dict[str, str]) -> Any:
            response = await client.get("/v1/policy", headers=headers)
            if response.status_code >= 400:
                problem = response.headers["content-type"]
                assert problem.startswith("application/problem+json"), response.text
            return response

        for role in (Role.CUSTOMER, Role.TECHNICIAN, Role.SERVICE):
            assert (await get(as_role(role, "someone"))).status_code == 403, role
        assert (await get({})).status_code == 401
        for role in (Role.AUDITOR, Role.ADMIN):
            assert (await get(as_role(role, "someone"))).status_code == 200, role
        response = await get(as_role(Role.DISPATCHER, "d-1"))
        indicators = await client.get(
            "/v1/indicators", headers=as_role(Role.DISPATCHER, "d-1")
        )

    assert response.status_code == 200
    policy = response.json()
    assert flat(policy["pairwise_matrix"]) == pytest.approx(flat(SEEDS))
    assert [round(policy["weights"][s], 2) for s in SubScore] == [
        DEFAULT_WEIGHTS[s] for s in SubScore
    ]
    assert round(policy["lambda_max"], 4) == 5.0788
    assert policy["consistency_index"] == pytest.approx((policy["lambda_max"] - 5) / 4)
    assert round(policy["consistency_ratio"], 3) == 0.018
    assert policy["sla"] == {
        "accept_minutes": {"emergency": 15.0, "urgent": 60.0, "normal": 240.0},
        "arrive_minutes": {"emergency": 120.0, "urgent": 480.0, "normal": 2880.0},
        "eta_kept_tolerance_s": 900.0,
    }
    assert {rule["name"] for rule in policy["alert_rules"]} >= {"slow_response"}
    assert policy["policy_version"] == indicators.json()["as_of"]["policy_version"]


async def test_directly_given_weights_show_no_matrix(settings: CommonSettings) -> None:
    async with metrics_client(settings) as client:
        response = await client.get(
            "/v1/policy", headers=bearer(settings)(Role.DISPATCHER, "d-1")
        )

    policy = response.json()
    assert response.status_code == 200
    assert policy["weights"] == {str(s): w for s, w in DEFAULT_WEIGHTS.items()}
    for field in ("pairwise_matrix", "lambda_max", "consistency_index"):
        assert policy[field] is None, field
    assert policy["consistency_ratio"] is None
    assert policy["policy_version"] == IndicatorPolicy().version
