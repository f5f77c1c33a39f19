"""Agents, typed outputs, streaming and images through the real ``openai`` client.

Every test here talks HTTP to FakeOpenAIServer on 127.0.0.1, so what is asserted is the
wire format the SDK really sends and parses: ``tools``/``tool_calls``, server-sent events
with a usage chunk, ``image_url`` parts.
"""

from __future__ import annotations

import json
import re

import pytest
from pydantic import BaseModel

import tracegrad as tg
from tests.conftest import backward_reply
from tests.llm.conftest import SECRET
from tracegrad.testing import FakeOpenAIServer, MockLLM, tool_reply


@tg.tool
def lookup_price(item: str) -> float:
    """Look up the price of one item in the shop, in dollars.

    Args:
        item: the item's name, singular, e.g. "apple"
    """
    prices = {"apple": 0.5, "pear": 0.75}
    return prices[item]


@tg.tool(name="multiply")
def times(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


def _agent_script(body: dict) -> object:
    """A model that looks up a price, multiplies, then answers -- and once asks for an item
    the shop does not have (a KeyError inside the tool)."""
    tool_msgs = [m for m in body["messages"] if m["role"] == "tool"]
    if not tool_msgs:
        return tool_reply(("lookup_price", {"item": "apple"}), ("lookup_price", {"item": "kiwi"}))
    if len(tool_msgs) == 2:
        return tool_reply(("multiply", {"a": 0.5, "b": 3}))
    return f"Three apples cost ${tool_msgs[-1]['content']}."


@pytest.fixture
def shop_server():
    with FakeOpenAIServer(_agent_script) as s:
        yield s


def test_two_tool_agent_loop_trace_and_feedback_on_a_tool_description(shop_server):
    server = shop_server
    llm = tg.LLM("openai:gpt-4o-mini", base_url=server.url, api_key=SECRET, cache=False)
    system = tg.Parameter("You are a shop assistant. Use the tools.", role="system prompt",
                          name="system")
    agent = tg.Agent(llm, system=system, tools=[lookup_price, times])
    answer = agent("How much are three apples?")

    assert answer.value == "Three apples cost $1.5."
    bodies = server.requests
    assert len(bodies) == 3
    sent = bodies[0]["tools"]
    assert [t["function"]["name"] for t in sent] == ["lookup_price", "multiply"]
    item = sent[0]["function"]["parameters"]["properties"]["item"]
    assert item == {"type": "string", "description": 'the item\'s name, singular, e.g. "apple"'}
    # the second request carries the assistant's tool calls and both results, by call id
    second = bodies[1]["messages"]
    assert second[2]["role"] == "assistant" and len(second[2]["tool_calls"]) == 2
    assert [(m["tool_call_id"], m["content"]) for m in second[3:]] == [
        ("call_1", "0.5"), ("call_2", "error: KeyError: 'kiwi'")]

    listing = tg.trace_listing(answer)
    assert 'call lookup_price({\\"item\\": \\"kiwi\\"})' in listing  # JSON-quoted value
    assert "lookup_price(call=agent" in listing and "-> 0.5" in listing
    assert "raised: \"KeyError: 'kiwi'\"" in listing
    assert re.search(r'lookup_price\(call=agent\d+, arguments=\{"item": "kiwi"\}\)', listing)
    assert "multiply(call=agent" in listing and "-> 1.5" in listing

    backward = MockLLM({r"Inputs to give feedback on": backward_reply}, default=None)
    loss = tg.Variable("Wrong: the agent asked for a kiwi nobody mentioned.", role="critique")
    loss.is_objective = True
    loss.set_parents([answer], tg.ops.Op("judge", {"answer": answer}))
    tg.backward(loss, propagator=tg.TextualPropagator(engine=backward))

    assert lookup_price.description.grads, "the tool description got no feedback"
    assert system.grads
    asked = "\n".join(backward.texts())
    assert "Look up the price of one item" in asked  # the description was shown
    assert "KeyError: 'kiwi'" in asked  # and the failed call's error reached backward
    assert times.description.grads  # described to every turn that could call it


class Invoice(BaseModel):
    item: str
    total: float


def test_structured_output_with_one_repair(server, make_llm):
    server.add_replies("total is 1.5 dollars", '{"item": "apple", "total": 1.5}')
    call = tg.LLMCall(make_llm(), system="Extract the invoice.", response_format=Invoice)
    out = call("three apples, $1.50")

    assert isinstance(out.value, Invoice) and out.value.total == 1.5
    first, second = server.requests
    assert first["response_format"]["type"] == "json_schema"
    assert first["response_format"]["json_schema"]["schema"]["required"] == ["item", "total"]
    assert "could not be used" in second["messages"][-1]["content"]  # the repair request
    total = out["total"]
    assert total.value == 1.5 and total.parents == (out,)
    assert json.loads(out.text) == {"item": "apple", "total": 1.5}


def test_structured_output_that_stays_invalid_is_an_error_node(server, make_llm):
    server.add_replies("no idea", "still no idea")
    call = tg.LLMCall(make_llm(), response_format=Invoice)
    with pytest.raises(tg.ExecutionError, match="after one repair") as err:
        call("three apples")
    assert err.value.variable.is_objective and server.request_count == 2


def test_streamed_reply_reaches_the_callback_and_is_metered(server, make_llm, tmp_path):
    server.add_replies("Three apples cost one dollar fifty.")
    llm = make_llm(cache=tmp_path / "cache.sqlite3")
    pieces: list[str] = []
    out = tg.LLMCall(llm, system="Answer.", on_token=pieces.append)("three apples?")

    assert pieces == ["Three", " apples", " cost", " one", " dollar", " fifty."]
    assert out.value == "".join(pieces)
    body = server.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    reported = server.responses[0]["usage"]
    total = llm.snapshot()["total"]
    assert (total["prompt_tokens"], total["completion_tokens"]) == (
        reported["prompt_tokens"], reported["completion_tokens"])
    assert total["estimated_calls"] == 0  # the usage chunk was read, not guessed

    again: list[str] = []
    cached = tg.LLMCall(llm, system="Answer.", on_token=again.append)("three apples?")
    assert cached.value == out.value and server.request_count == 1  # the cache kept the reply
    assert again == [out.value]  # and still handed it to the callback


def test_streamed_tool_calls_are_put_together(server, make_llm):
    server.add_replies(tool_reply(("multiply", {"a": 2, "b": 4})), "It is 8.")
    pieces: list[str] = []
    agent = tg.Agent(make_llm(), tools=[times], on_token=pieces.append)
    out = agent("2 times 4?")
    assert out.value == "It is 8." and "".join(pieces) == "It is 8."
    assert server.requests[1]["messages"][-1]["content"] == "8.0"


def test_an_image_in_a_template_reaches_the_request_as_an_image_part(server, make_llm):
    server.add_replies("a red square")
    pic = tg.Image(b"\x89PNG\r\n\x1a\n fake image bytes", "image/png")
    out = tg.FormattedLLMCall(make_llm(), "Look: {{ pic }} What is it?")(pic=pic)

    assert out.value == "a red square"
    content = server.requests[0]["messages"][-1]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "text"]
    assert content[0]["text"] == "Look: " and content[2]["text"] == " What is it?"
    assert content[1]["image_url"]["url"] == pic.data_url()
    assert "<Image" not in json.dumps(content)


def test_tools_are_part_of_the_cache_key(server, make_llm, tmp_path):
    server.add_replies("one", "two")
    llm = make_llm(cache=tmp_path / "cache.sqlite3")
    plain = tg.Chat(llm)("hi")
    with_tools = tg.Chat(llm, tools=[times])("hi")
    assert (plain.value, with_tools.value) == ("one", "two") and server.request_count == 2


def test_async_streaming_and_stream_true_without_a_callback(server, make_llm):
    import asyncio

    server.add_replies("async streamed reply", "plain streamed reply")
    llm = make_llm()
    pieces: list[str] = []
    out = asyncio.run(tg.LLMCall(llm, on_token=pieces.append).acall("hi"))
    assert out.value == "async streamed reply" and len(pieces) == 3
    quiet = tg.LLMCall(llm, stream=True)("hi")
    assert quiet.value == "plain streamed reply" and server.requests[1]["stream"] is True
    assert llm.snapshot()["total"]["estimated_calls"] == 0


def test_a_cached_agent_run_replays_its_tool_calls(server, make_llm, tmp_path):
    server.add_replies(tool_reply(("multiply", {"a": 2, "b": 4})), "It is 8.")
    llm = make_llm(cache=tmp_path / "cache.sqlite3")
    first = tg.Agent(llm, tools=[times])("2 times 4?")
    again = tg.Agent(llm, tools=[times])("2 times 4?")
    assert (first.value, again.value) == ("It is 8.", "It is 8.")
    assert server.request_count == 2  # the second run came from the cache, tool calls and all
    assert "multiply" in tg.trace_listing(again)


def test_the_call_log_records_tools_and_tool_calls(server, make_llm, tmp_path):
    server.add_replies(tool_reply(("multiply", {"a": 2, "b": 4})), "It is 8.")
    log = tmp_path / "calls.jsonl"
    tg.Agent(make_llm(call_log=log), tools=[times])("2 times 4?")
    first = json.loads(log.read_text().splitlines()[0])
    assert first["request"]["tools"] == ["multiply"]
    assert first["response"]["tool_calls"][0]["function"]["name"] == "multiply"
