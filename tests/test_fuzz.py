"""Fuzzing every RPC of every service (issue 20): Hypothesis draws requests from the protobuf
descriptors (adversarial values mixed with plausible ones) and byte strings that are no request
at all, and sends them over real sockets to the registry, session, job and inference services,
on SQLite and on PostgreSQL.

Properties, per call: the status is never INTERNAL or UNKNOWN; an answer (a status, or a
stream's first message) comes within the deadline (a client-side DEADLINE_EXCEEDED is a hang);
the answer arrives as the server sent it (not replaced by the client's gRPC library, e.g. for a
status message over its metadata limit); and no service passes a peer's INTERNAL on under
another status. After each RPC's run its service still answers the health check SERVING. Every
call is counted; a test fails with the list of distinct failures (the smallest request seen for
each). The module ends with a table of examples and statuses per RPC and backend.

The budget is ``STEERLAB_FUZZ_EXAMPLES`` (default 25) examples per RPC, backend and kind of
request, derandomized: the same examples on every run. ``scripts/fuzz.py`` runs longer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fuzz_platform import (
    BACKENDS,
    FuzzPlatform,
    backend_database,
    deadline_s,
    examples_per_rpc,
    fuzz_model,
    fuzz_requests,
    fuzz_undecodable,
    start_platform,
)
from fuzz_support import Rpc, Tally, all_rpcs, health, report

from steerlab.steering import LoadedModel

RPCS = all_rpcs()
Run = Callable[[FuzzPlatform, Rpc, Tally, int, float], str]


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return fuzz_model()


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    """Every call of the module; printed as a table when the module ends."""
    counted = Tally()
    yield counted
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # shown with or without -s
        reporter.write("\n")
        reporter.write_sep("-", "fuzz: examples and statuses per RPC and backend")
        reporter.write_line(counted.table())
        if counted.violations:
            reporter.write_sep("-", "fuzz: distinct failures")
            reporter.write_line(report(counted.found()))


@pytest.fixture(scope="module", params=BACKENDS)
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model: LoadedModel
) -> Iterator[FuzzPlatform]:
    """The four services on one fresh database of the backend, seeded."""
    backend: str = request.param
    with (
        pytest.MonkeyPatch.context() as patch,
        backend_database(backend, tmp_path_factory.mktemp(f"fuzz-{backend}")) as url,
    ):
        patch.setenv("STEERLAB_LEARN_CACHE", str(tmp_path_factory.mktemp("learn-cache")))
        started = start_platform(backend, url, model)
        yield started
        started.close()


def check_run(platform: FuzzPlatform, rpc: Rpc, tally: Tally, run: Run) -> None:
    """Fuzz ``rpc`` with ``run``, then assert the properties over every call it made."""
    label = run(platform, rpc, tally, examples_per_rpc(), deadline_s())
    failures = tally.found(label, platform.backend)
    assert tally.examples[(label, platform.backend)] > 0
    assert health(platform.channels[rpc.service]) == "SERVING", f"{rpc.service} is no longer SERVING"
    assert not failures, f"{len(failures)} distinct failures:\n{report(failures)}"


@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.label)
def test_drawn_requests_get_a_proper_status_in_time(platform: FuzzPlatform, rpc: Rpc, tally: Tally) -> None:
    check_run(platform, rpc, tally, fuzz_requests)


@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.label)
def test_undecodable_requests_get_a_proper_status_in_time(
    platform: FuzzPlatform, rpc: Rpc, tally: Tally
) -> None:
    check_run(platform, rpc, tally, fuzz_undecodable)


def test_every_rpc_of_every_service_is_fuzzed() -> None:
    """The RPC list comes from the descriptors: all four services, none missing."""
    services = {rpc.service.rsplit(".", 1)[-1] for rpc in RPCS}
    assert services == {"RegistryService", "SessionService", "JobService", "InferenceService"}
    assert {"Generate", "WatchJob", "ChooseComparison", "SetAlias"} <= {rpc.name for rpc in RPCS}
