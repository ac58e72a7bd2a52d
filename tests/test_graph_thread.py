"""ggml's work runs on one thread (llm/graph_thread.py): libgomp keeps a team of
threads per thread that computes a graph, and two teams on a 2-core CPU make
every graph node end in a futex sleep."""

from __future__ import annotations

import signal
import threading
import time

import llama_cpp
import numpy as np
import pytest
from llama_cpp import mtmd_cpp

from edge_assistant.config import EngineConfig
from edge_assistant.llm.engine import GemmaEngine
from edge_assistant.llm.graph_thread import GraphThread, on_graph_thread

from speech import speak


def test_callers_on_any_thread_share_one_thread_and_get_results_and_errors() -> None:
    graph = GraphThread()
    seen: list[threading.Thread] = []

    def where() -> str:
        seen.append(threading.current_thread())
        return "done"

    callers = [threading.Thread(target=graph.run, args=(where,)) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(5.0)
    assert graph.run(where) == "done"
    assert len(seen) == 5 and len(set(seen)) == 1 and seen[0].name == "ggml"
    with pytest.raises(ValueError, match="bad input"):
        graph.run(lambda: (_ for _ in ()).throw(ValueError("bad input")))
    assert graph.run(lambda: graph.run(lambda: 7)) == 7  # a job that needs the thread again runs in place


def test_ctrl_c_while_waiting_is_raised_after_the_job_has_ended() -> None:
    """The caller may unwind and free what the graph uses, so it waits for the job first."""
    graph = GraphThread()
    finished = threading.Event()

    def long_job() -> None:
        time.sleep(0.4)
        finished.set()

    main = threading.main_thread().ident
    assert threading.current_thread().ident == main
    threading.Timer(0.1, signal.pthread_kill, args=(main, signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        graph.run(long_job)
    assert finished.is_set()


@pytest.mark.slow
def test_the_engine_decodes_and_encodes_on_the_graph_thread_whoever_drives_the_turn(
    twin, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()

    def recorded(function):  # noqa: ANN001, ANN202
        def call(*args):  # noqa: ANN002, ANN202
            threads.add(threading.current_thread().name)
            return function(*args)

        return call

    monkeypatch.setattr(llama_cpp, "llama_decode", recorded(llama_cpp.llama_decode))
    monkeypatch.setattr(mtmd_cpp, "mtmd_audio_stream_encode", recorded(mtmd_cpp.mtmd_audio_stream_encode))
    question = speak("What time is it?").samples.astype(np.float32)
    with GemmaEngine(twin.model, twin.mmproj, EngineConfig(max_tokens=3, seed=1)) as engine:
        replies: list[str] = []
        worker = threading.Thread(target=lambda: replies.append(engine.respond(question, None).text), name="turn")
        worker.start()
        worker.join(60.0)
        assert replies
    assert threads == {"ggml"}
    assert on_graph_thread(lambda: threading.current_thread().name) == "ggml"
