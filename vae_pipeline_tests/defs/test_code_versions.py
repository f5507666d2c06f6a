"""A hand-set code version cannot be forgotten: its source changed, so it was bumped or the change confirmed."""

from __future__ import annotations

from vae_pipeline_tests.code_versions import current, recorded


def _stale(now: dict[str, dict[str, str]], then: dict[str, dict[str, str]]) -> list[str]:
    """The hand-set versions whose source or value changed since they were recorded, with what to do.

    Any change asks for a decision, recorded: a bump recorded with its source, so that the next change
    of that source is caught again.
    """
    return [
        f"{module} (or a core module it imports) changed since {entry['constant']}={then.get(module, {}).get('version')!r} "
        f"was recorded: bump {entry['constant']} (now {entry['version']!r}) if the change can alter what the asset produces "
        "(models and stores are then made again), then run `python -m vae_pipeline_tests.code_versions` to record it"
        for module, entry in now.items() if then.get(module) != entry
    ]


def test_every_hand_set_code_version_was_confirmed_against_its_source() -> None:
    stale = _stale(current(), recorded())
    assert not stale, "\n".join(stale)


def test_a_changed_source_is_caught_until_the_decision_is_recorded() -> None:
    then = {"m": {"constant": "C", "version": "1", "source": "aaaa"}}
    assert not _stale({"m": {"constant": "C", "version": "1", "source": "aaaa"}}, then)
    assert _stale({"m": {"constant": "C", "version": "1", "source": "bbbb"}}, then)  # changed, not bumped or confirmed
    assert _stale({"m": {"constant": "C", "version": "2", "source": "bbbb"}}, then)  # bumped, not yet recorded
    assert _stale({"m": {"constant": "C", "version": "1", "source": "aaaa"}}, {})  # never recorded
