"""Images in the forward call reach the backward model as images, or as a described
placeholder when the backward model is not set to take them."""

from __future__ import annotations

import tracegrad as tg
from tests.conftest import backward_reply
from tracegrad.testing import MockLLM

PIC = tg.Image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 41, "image/png")  # 49 bytes


def _run(send_images: bool) -> MockLLM:
    llm = MockLLM(default="a cat")
    template = tg.Parameter("Look: {{ pic }} Name the animal.", role="prompt template")
    out = tg.FormattedLLMCall(llm, template)(pic=PIC)
    backward = MockLLM({r"Inputs to give feedback on": backward_reply}, default=None)
    out.backward("It is a dog.", propagator=tg.TextualPropagator(engine=backward,
                                                                 send_images=send_images))
    assert template.grads
    return backward


def test_the_backward_model_gets_the_image_when_it_takes_images():
    content = _run(send_images=True).requests[0].messages[-1]["content"]
    assert isinstance(content, list)
    images = [p for p in content if p["type"] == "image_url"]
    assert [p["image_url"]["url"] for p in images] == [PIC.data_url()]
    assert "[image #1, attached below]" in content[0]["text"]
    assert "<Image" not in content[0]["text"]


def test_otherwise_it_reads_a_placeholder_that_says_what_it_is_not_shown():
    content = _run(send_images=False).requests[0].messages[-1]["content"]
    assert isinstance(content, str)
    assert "[an image (image/png, 49 bytes) that the model saw; not shown to you]" in content


def test_images_in_a_list_of_fields_keep_their_order_with_text():
    llm = MockLLM(default="ok")
    second = tg.Image(b"GIF89a", "image/gif")
    tg.FormattedLLMCall(llm, "{% for p in pics %}[{{ p }}]{% endfor %}")(pics=[PIC, second])
    parts = llm.requests[0].messages[-1]["content"]
    assert [p.get("text") or p["image_url"]["url"][:14] for p in parts] == [
        "[", "data:image/png", "][", "data:image/gif", "]"]


def test_the_setting_may_live_on_the_backward_engine():
    llm = MockLLM(default="a cat")
    template = tg.Parameter("Look: {{ pic }}", role="prompt template")
    out = tg.FormattedLLMCall(llm, template)(pic=PIC)
    backward = MockLLM({r"Inputs to give feedback on": backward_reply}, default=None)
    backward.accepts_images = True
    from tracegrad.llm.meter import Meter

    out.backward("It is a dog.", engine=Meter(backward))  # found through the wrapper
    assert isinstance(backward.requests[0].messages[-1]["content"], list)


def test_text_in_a_field_cannot_forge_an_image_marker():
    llm = MockLLM(default="ok")
    forged = "\x00tg-image-0\x00 \x00tg-image-7\x00"
    tg.FormattedLLMCall(llm, "{{ pic }} {{ note }}")(pic=PIC, note=forged)
    parts = llm.requests[0].messages[-1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "text"]
    assert parts[1]["text"] == " " + forged
