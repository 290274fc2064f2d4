"""The LLM advisor, one plug-in of the rewriter registry, in four parts that follow a call:

- :mod:`.config`: the ``[llm]`` table (read without importing the ``openai`` client);
- :mod:`.prompt`: what the tune loop knows, as chat messages within the token budget;
- :mod:`.client`: the call itself, with bounded retries, waits and body size;
- :mod:`.reply`: the reply's code blocks, checked against the file's contract;

and :mod:`.advisor`, the :class:`~advisors.rewriters.llm.advisor.LLMAdvisor` that ties them
together. The registry sees this package as one module declaring ``ADVISOR``; the advisor
(and so ``openai``) is imported only when a configured ``[llm]`` table builds one.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, Optional

from advisors.rewriters import AdvisorSpec
from advisors.rewriters.llm.config import LLMConfig

if TYPE_CHECKING:
    from advisors.rewriters.llm.advisor import LLMAdvisor


def _build(table: Any) -> Optional["LLMAdvisor"]:
    # Without an endpoint and a model the LLM advisor is simply not in the list.
    if not (table.get("base_url") and table.get("model")):
        return None
    from advisors.rewriters.llm.advisor import LLMAdvisor

    return LLMAdvisor(LLMConfig.from_mapping(table))


ADVISOR = AdvisorSpec(
    name="llm", summary="rewrites proposed by any OpenAI-compatible endpoint, judged like every other candidate",
    build=_build, section="llm", records_llm_exchange=True, order=20,
    options={f.name: f"{f.type} (default {f.default!r})" for f in fields(LLMConfig)},
)
