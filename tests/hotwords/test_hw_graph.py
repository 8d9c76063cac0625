from __future__ import annotations

import random
import time

import pytest

from asr_engine.decoding.bias import Biaser, BiasState
from hotwords.codec import TokenCodec
from hotwords.graph import BiasGraph, GraphState, WeightedPhrase, check_phrase, compile_graph, phrase_variants


def build(codec: TokenCodec, *phrases: str, boost: float = 3.0, **kw: float) -> BiasGraph:
    graph, issues = compile_graph([WeightedPhrase(p, boost) for p in phrases], codec.encode, codec.decode, **kw)
    assert not issues
    return graph


def walk(state: GraphState, tokens: list[int]) -> tuple[GraphState, float, float, list[str]]:
    """Feed tokens as a decoder that always picks them would: returns the final state, the boosts it
    granted, the sum of corrections, and the phrases completed."""
    granted = corrections = 0.0
    completed: list[str] = []
    for token in tokens:
        granted += state.boosts().get(token, 0.0)
        state, correction = state.advance(token)
        corrections += correction
        completed.extend(state.completed)
    return state, granted, corrections, completed


def test_satisfies_the_decoder_protocol(codec: TokenCodec) -> None:
    graph = build(codec, "Zentrix Unlimited")
    biaser: Biaser = graph
    state: BiasState = biaser.start()
    assert isinstance(state.prompt_text(), str)


def test_continuations_are_offered_and_the_first_piece_is_not(codec: TokenCodec) -> None:
    graph = build(codec, "Zentrix Unlimited", "Kestrava router")
    z, ent, rix, unlimited = codec.encode(" Zentrix Unlimited")
    start = graph.start()
    assert z not in start.boosts()  # first piece alone: no boost
    after_z, correction = start.advance(z)
    assert correction == 0.0
    assert after_z.boosts()[ent] == 3.0
    after_rix, _ = after_z.advance(ent)[0].advance(rix)
    assert after_rix.boosts() == {unlimited: 3.0}
    state, granted, corrections, completed = walk(start, codec.encode(" Zentrix Unlimited plan"))
    assert granted == 9.0 and corrections == 0.0  # a completed phrase keeps its boosts
    assert completed == ["Zentrix Unlimited"]
    assert state.node == 0


def test_abandoned_partial_match_is_cancelled(codec: TokenCodec) -> None:
    graph = build(codec, "Zentrix Unlimited")
    final, granted, corrections, completed = walk(graph.start(), codec.encode(" Zentrix plan"))
    assert granted == 6.0  # 'ent', 'rix'
    assert corrections == -granted
    assert completed == []
    assert final.node == 0 and final.at_risk == 0.0
    # The cancellation comes exactly on the token that leaves the match.
    mid, _, _, _ = walk(graph.start(), codec.encode(" Zentrix"))
    _, correction = mid.advance(codec.encode(" plan")[0])
    assert correction == -6.0


def test_variants_with_space_and_capitalization(codec: TokenCodec) -> None:
    variants = phrase_variants("NovaPay wallet", codec.encode, codec.decode)
    texts = {codec.decode(list(v)) for v in variants}
    assert texts == {
        " NovaPay wallet",
        "NovaPay wallet",
        " novapay wallet",
        "novapay wallet",
        " NovaPay Wallet",
        "NovaPay Wallet",
    }
    graph = build(codec, "NovaPay wallet")
    for text in texts:
        _, _, _, completed = walk(graph.start(), codec.encode(text))
        assert completed == ["NovaPay wallet"], text


def test_overlapping_phrases_use_failure_links(codec: TokenCodec) -> None:
    # "Zentrix" is a prefix of one phrase and a suffix-start of another: after " Kestrava Zentrix" the
    # automaton must complete both, and a failure inside the long phrase falls back to the short one.
    graph = build(codec, "Zentrix", "Zentrix Unlimited", "Kestrava Zentrix")
    _, granted, corrections, completed = walk(graph.start(), codec.encode(" Kestrava Zentrix Unlimited"))
    assert completed == ["Kestrava Zentrix", "Zentrix", "Zentrix Unlimited"]
    assert corrections == 0.0
    assert granted == 21.0  # 'est' 'rav' 'a' ' Z' 'ent' 'rix' ' Unlimited': no piece rewarded twice
    # Shared prefix: "Zentrix" completes, then " Unlimited" is offered as a continuation.
    state, _, _, completed = walk(graph.start(), codec.encode(" Zentrix"))
    assert completed == ["Zentrix"]
    assert state.boosts()[codec.encode(" Unlimited")[0]] == 3.0
    # Leaving after a completed phrase costs nothing: its boosts are banked.
    _, correction = state.advance(codec.encode(" plan")[0])
    assert correction == 0.0


def test_failure_to_a_suffix_keeps_what_the_suffix_earned(codec: TokenCodec) -> None:
    a = codec.encode(" Kestrava")
    b = codec.encode(" Velmont Fiber")
    graph = build(codec, "Kestrava Velmont Orbilo", "Velmont Fiber")
    # " Kestrava Velmont" is a partial match of the first phrase; " Fiber" fails it but continues the
    # second phrase through the failure link: the net boost equals what " Velmont Fiber" alone earns.
    _, granted, corrections, completed = walk(graph.start(), a + b)
    _, alone, alone_corr, _ = walk(graph.start(), b)
    assert completed == ["Velmont Fiber"]
    assert granted + corrections == pytest.approx(alone + alone_corr)


def test_repeating_the_first_piece_never_accumulates(codec: TokenCodec) -> None:
    graph = build(codec, "Kestrava router", boost=8.0)
    k = codec.encode(" Kestrava")[0]
    state = graph.start()
    total = 0.0
    for _ in range(20):
        total += state.boosts().get(k, 0.0)
        state, correction = state.advance(k)
        total += correction
    assert total == 0.0


def test_first_piece_boost_is_configurable_and_cancelled(codec: TokenCodec) -> None:
    graph = build(codec, "Zentrix Unlimited", first_piece_boost=0.5)
    z = codec.encode(" Zentrix")[0]
    assert graph.start().boosts()[z] == 0.5
    _, granted, corrections, _ = walk(graph.start(), codec.encode(" Z plan"))
    assert granted == 0.5 and corrections == -0.5


def test_states_are_immutable_and_shareable(codec: TokenCodec) -> None:
    graph = build(codec, "Zentrix Unlimited")
    tokens = codec.encode(" Zentrix")
    a, _, _, _ = walk(graph.start(), tokens)
    b, _, _, _ = walk(graph.start(), tokens)
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.node = 0  # type: ignore[misc]
    assert graph.start() is graph.start()


def test_rejects_what_the_tokenizer_cannot_carry(codec: TokenCodec) -> None:
    assert check_phrase("<|endoftext|>", codec.encode, codec.decode, 24).reason == "not_representable"
    issue = check_phrase(" ".join(["Zentrix"] * 10), codec.encode, codec.decode, 24)
    assert issue is not None and issue.reason == "too_many_tokens"
    graph, issues = compile_graph(
        [WeightedPhrase("<|endoftext|>", 3.0), WeightedPhrase("Zentrix", 3.0)], codec.encode, codec.decode
    )
    assert [i.phrase for i in issues] == ["<|endoftext|>"]
    assert graph.phrases == ("Zentrix",)


def test_prompt_takes_whole_lists_while_they_fit(codec: TokenCodec) -> None:
    node = [WeightedPhrase("Zentrix Unlimited", 3.0, "node"), WeightedPhrase("Kestrava router", 3.0, "node")]
    catalogue = [WeightedPhrase("NovaPay wallet", 3.0, "catalogue"), WeightedPhrase("Velmont Fiber", 3.0, "catalogue")]
    graph, _ = compile_graph(node + catalogue, codec.encode, codec.decode, prompt_max_chars=40)
    # The catalogue does not fit whole: none of it goes in, though one of its names would.
    assert graph.start().prompt_text() == "Zentrix Unlimited, Kestrava router"
    graph, _ = compile_graph(node + catalogue, codec.encode, codec.decode, prompt_max_chars=70)
    assert graph.start().prompt_text() == "Zentrix Unlimited, Kestrava router, NovaPay wallet, Velmont Fiber"
    graph, _ = compile_graph(catalogue, codec.encode, codec.decode, prompt_max_chars=20)
    assert graph.start().prompt_text() == ""
    # Every phrase is still in the graph.
    assert set(graph.phrases) == {"NovaPay wallet", "Velmont Fiber"}


def test_compiles_a_thousand_phrases_quickly(codec: TokenCodec) -> None:
    rng = random.Random(7)
    syllables = ["ka", "zen", "trix", "vor", "nel", "qui", "bo", "lum", "ster", "pay", "ra", "mont", "fi"]
    phrases: set[str] = set()
    while len(phrases) < 1000:
        words = rng.randint(1, 3)
        phrases.add(" ".join("".join(rng.choices(syllables, k=rng.randint(2, 4))).capitalize() for _ in range(words)))
    # This thread's CPU time, best of three: what the build costs, not what else the machine is doing.
    seconds = []
    for _ in range(3):
        began = time.thread_time()
        graph = build(codec, *sorted(phrases))
        seconds.append(time.thread_time() - began)
    print(f"compiled 1000 phrases into {graph.node_count} nodes in {min(seconds) * 1000:.0f} ms CPU")
    assert min(seconds) < 1.0
    # boosts() is a precomputed mapping: looking it up does not depend on the graph's size.
    state = graph.start()
    began = time.thread_time()
    for _ in range(10000):
        state.boosts()
    assert time.thread_time() - began < 0.1
