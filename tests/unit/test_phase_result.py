"""The shard and phase-result values: the flat JSON every result, record and label is made of."""

from __future__ import annotations

from moonmind_codex.core.phase_result import PhaseResult
from moonmind_codex.core.shard import Shard

SHARD = Shard(number=4, queue="codex-4", volume="codex_auth_4", host="w3")


def test_a_shard_reads_as_its_number_volume_and_host_and_flattens_to_four_fields() -> None:
    assert str(SHARD) == "shard 4 (volume codex_auth_4 on host w3)"
    assert SHARD.as_fields() == {
        "shard": 4,
        "queue": "codex-4",
        "volume": "codex_auth_4",
        "host": "w3",
    }


def test_a_phase_result_is_one_flat_dict_with_the_shards_four_values() -> None:
    result = PhaseResult(
        run_id="run-1",
        phase="plan",
        shard=SHARD,
        worker="codex-4@w3",
        outcome="blocked",
        preflight_status="blocked",
        exit_code=2,
        duration_s=1.5,
        message="sign in again",
    )
    assert result.to_dict() == {
        "run_id": "run-1",
        "phase": "plan",
        "worker": "codex-4@w3",
        "outcome": "blocked",
        "preflight_status": "blocked",
        "container_id": None,
        "container_name": None,
        "exit_code": 2,
        "log_path": None,
        "duration_s": 1.5,
        "reused_existing": False,
        "replayed": False,
        "message": "sign in again",
        "shard": 4,
        "queue": "codex-4",
        "volume": "codex_auth_4",
        "host": "w3",
    }
