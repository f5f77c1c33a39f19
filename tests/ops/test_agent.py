"""Chat histories and the tool loop on the mock engine: graph shape, errors, limits."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

import tracegrad as tg
from tracegrad.testing import MockLLM, tool_reply


def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


def test_chat_sends_the_history_and_every_message_is_an_input():
    llm = MockLLM(["Paris.", "About 2.1 million."])
    chat = tg.Chat(llm, system=tg.Parameter("Be brief.", role="system prompt"))
    q1 = tg.Variable("Capital of France?", role="question")
    r1 = chat([q1])
    r2 = chat([("user", q1), {"role": "assistant", "content": r1}, "And its population?"])

    assert llm.requests[1].messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And its population?"},
    ]
    assert set(r2.op.inputs) == {"system", "user1", "assistant2", "user3"}
    assert r2.op.inputs["assistant2"] is r1 and llm.requests[1].tools is None


def test_feedback_on_a_later_turn_reaches_the_turn_that_caused_it(backward_engine):
    llm = MockLLM(["Lyon.", "Lyon has 500k people."])
    first = tg.Parameter("Answer capitals.", role="system prompt of the first turn",
                         name="first_system")
    r1 = tg.Chat(llm, system=first)(["Capital of France?"])
    r2 = tg.Chat(llm)([("user", "Capital of France?"), ("assistant", r1),
                       ("user", "Its population?")])
    r2.backward("Wrong city: the capital of France is Paris.")
    assert r1.grads, "the earlier reply got no feedback"
    assert first.grads, "the system prompt of the turn that caused it got no feedback"


def test_the_loop_stops_at_max_turns_with_an_error_node_that_is_feedback():
    llm = MockLLM(default=tool_reply(("add", {"a": 1, "b": 1})))
    agent = tg.Agent(llm, tools=[add], max_turns=3)
    out = agent("keep adding")
    assert llm.calls == 3
    assert out.error and "max_turns=3" in out.value
    assert out.grads and "without a final answer" in out.grads[0].text
    # the tools of the last turn were not run: nobody would read their results
    assert sum(m["role"] == "tool" for m in llm.requests[-1].messages) == 2


def test_unknown_tools_and_bad_arguments_go_back_to_the_model_not_up_the_stack():
    llm = MockLLM([tool_reply(("nope", {}), ("add", '{"a": 1')), "done"])
    out = tg.Agent(llm, tools=[add])("hi")
    assert out.value == "done"
    results = [m["content"] for m in llm.requests[1].messages if m["role"] == "tool"]
    assert results[0].startswith("error: LookupError: there is no tool named 'nope'")
    assert results[1].startswith("error: ToolArgumentsError: arguments are not valid JSON")
    errors = [v for v in out.op.inputs.values() if v.error]
    assert len(errors) == 2 and all(v.grads for v in errors)


def test_tool_error_feedback_reaches_the_tool_description(backward_engine):
    def divide(a: float, b: float) -> float:
        """Divide."""
        return a / b

    tool = tg.Tool(divide)
    llm = MockLLM([tool_reply(("divide", {"a": 1, "b": 0})), "It is undefined."])
    out = tg.Agent(llm, tools=[tool])("1/0?")
    out.backward("The answer is fine; say why.")
    assert tool.description.grads
    asked = "\n".join(backward_engine.texts("backward"))
    assert "ZeroDivisionError" in asked


def test_an_optimizer_rewrites_a_tool_description_used_by_the_next_run(backward_engine):
    tool = tg.Tool(add)
    llm = MockLLM([tool_reply(("add", {"a": 2, "b": 2})), "4"])
    out = tg.Agent(llm, tools=[tool])("2+2?")
    out.backward("Correct, but the tool's description should say it only takes integers.")
    optimizer = MockLLM(default="<new_value>Add two integers (whole numbers only).</new_value>")
    tg.TGD([tool.description], optimizer).step()
    assert tool.description.value == "Add two integers (whole numbers only)."
    llm.add_replies("5")
    tg.Agent(llm, tools=[tool])("2+3?")
    assert llm.requests[-1].tools[0]["function"]["description"] == tool.description.value


def test_async_twin_awaits_async_tools():
    async def fetch(url: str) -> str:
        """Fetch a page."""
        await asyncio.sleep(0)
        return f"<html>{url}</html>"

    llm = MockLLM([tool_reply(("fetch", {"url": "x.org"})), "It is a page."])
    out = asyncio.run(tg.Agent(llm, tools=[fetch]).acall("what is on x.org?"))
    assert out.value == "It is a page."
    assert llm.requests[1].messages[-1]["content"] == "<html>x.org</html>"


class City(BaseModel):
    name: str
    population: int


def test_chat_structured_reply_is_repaired_once_and_fields_are_nodes():
    llm = MockLLM(["Paris, about two million", '{"name": "Paris", "population": 2100000}'])
    out = tg.Chat(llm, response_format=City)(["Capital of France?"])
    assert isinstance(out.value, City) and llm.calls == 2
    assert "could not be used" in llm.texts()[1]
    pop = out["population"]
    assert pop.value == 2100000 and pop.parents == (out,)
    with pytest.raises(KeyError, match="fields: name, population"):
        out["mayor"]


def test_feedback_on_a_field_names_the_field(backward_engine):
    llm = MockLLM(['{"name": "Paris", "population": 7}'])
    system = tg.Parameter("Extract.", role="system prompt")
    out = tg.LLMCall(llm, system=system, response_format=City)("France?")
    pop = out.field("population")
    pop.backward("Far too small.")
    assert "About the field `population`" in out.grads[0].text
    assert system.grads  # and on through the call that produced the object
    assert "About the field `population`" in backward_engine.texts("backward")[0]


def test_sampling_settings_may_be_parameters():
    llm = MockLLM(default="ok")
    temp = tg.Parameter(0.7, role="sampling temperature")
    call = tg.LLMCall(llm, temperature=temp, max_tokens=tg.Parameter("64", role="limit"))
    out = call("hi")
    assert llm.requests[0].params == {"temperature": 0.7, "max_tokens": 64}
    assert out.op.inputs["temperature"] is temp and temp in call.parameters()
    temp.value = "0.2"  # as an optimizer might write it
    call("hi")
    assert llm.requests[1].params["temperature"] == 0.2
    temp.value = "warm"
    with pytest.raises(ValueError, match="temperature='warm' is not a number"):
        call("hi")
    chat = tg.Chat(llm, top_p=tg.Parameter(0.9))
    chat("hi")
    assert llm.requests[-1].params == {"top_p": 0.9}


def test_streaming_on_the_mock_hands_pieces_to_the_callback():
    llm = MockLLM(["one two three"])
    pieces: list[str] = []
    out = tg.LLMCall(llm)("count", on_token=pieces.append)
    assert pieces == ["one", " two", " three"] and out.value == "one two three"


def test_llm_call_sends_a_list_of_messages_as_a_history_not_one_string():
    llm = MockLLM(default="ok")
    earlier = tg.Variable("Paris.", role="earlier reply")
    out = tg.LLMCall(llm, system="Be brief.")(
        [{"role": "user", "content": "Capital?"}, ("assistant", earlier), ("user", "Sure?")])
    assert [m["role"] for m in llm.requests[0].messages] == [
        "system", "user", "assistant", "user"]
    assert out.op.inputs["assistant2"] is earlier
    with pytest.raises(ValueError, match="message 1: unknown role 'bot'"):
        tg.LLMCall(llm)([("bot", "hi")])


def test_a_module_finds_the_tool_descriptions_and_settings_of_its_agent():
    class Shop(tg.Module):
        def __init__(self):
            self.agent = tg.Agent(MockLLM(), tools=[add],
                                  temperature=tg.Parameter(0.5, role="temperature"))

        def forward(self, q):
            return self.agent(q)

    shop = Shop()
    state = shop.state_dict()
    assert state["agent.tools.0.description"] == "Add two whole numbers."
    assert state["agent.params.temperature"] == 0.5
    shop.load_state_dict({**state, "agent.tools.0.description": "Sum two integers."})
    assert shop.agent.tools[0].spec()["function"]["description"] == "Sum two integers."


def test_trace_optimizer_sees_the_tool_calls_and_rewrites_a_description():
    tool = tg.Tool(add)
    system = tg.Parameter("Use tools.", role="system prompt", name="sys")
    llm = MockLLM([tool_reply(("add", {"a": 2, "b": "two"})), "I could not add."])
    out = tg.Agent(llm, system=system, tools=[tool])("2+2?")
    out.backward("Wrong: the answer is 4.", propagator=tg.TracePropagator())
    optimizer = MockLLM(['{"values": {"add.description": "Add two integers; write digits."}}'])
    tg.TraceOptimizer([system, tool.description], optimizer).step()
    sent = optimizer.texts()[0]
    assert "arguments do not match the schema" in sent  # the failed call is in the listing
    assert tool.description.value == "Add two integers; write digits."


class Sum(BaseModel):
    total: int


def test_an_agent_can_type_its_final_answer():
    llm = MockLLM([tool_reply(("add", {"a": 2, "b": 2})), '{"total": 4}'])
    out = tg.Agent(llm, tools=[add], response_format=Sum)("2+2?")
    assert out.value == Sum(total=4) and out["total"].value == 4


def test_llm_call_refuses_tools_it_would_silently_drop():
    with pytest.raises(TypeError, match=r"use tg.Agent\(llm, tools="):
        tg.LLMCall(MockLLM(), tools=[{"type": "function", "function": {"name": "f"}}])
