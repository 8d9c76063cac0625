"""The flow the Kubernetes deployment mounts is a valid flow for the dialog engine, and every prompt
it can say without a slot value renders."""

from __future__ import annotations

from callers import ROOT

from dialog.flow import load_flow
from dialog.policy import DialogPolicy
from ivr.calls.prompt_cache import PromptCache
from ivr.calls.prompts import PromptConfig, PromptRenderer

DEPLOY_FLOW = ROOT / "deploy" / "k8s" / "base" / "flow.yaml"


async def test_deployed_flow_parses_and_its_prompts_render() -> None:
    flow = load_flow(DEPLOY_FLOW)
    DialogPolicy(flow)
    cache = PromptCache(PromptRenderer(PromptConfig(cache_dir=ROOT / ".cache" / "test-prompts")))
    assert await cache.warm(flow) >= len(flow.nodes)
