"""The dialog: which prompt a caller hears next and which queue the call lands in.

Knows nothing of SIP, RTP or speech recognition internals. A call session wires it like this:

    flow = load_demo_flow()                       # or load_flow(path); dialog.flow
    policy = DialogPolicy(flow)                   # dialog.policy; pure (context, event) -> Decision
    stores = open_dialog_stores(redis, sealer=open_sealer(SealingParams(key_file=...)))  # URL or connect(**options)
    contexts, records = stores.contexts, stores.records   # dialog.durable: calls outlive Redis faults
    # (or open_context_store(None) / open_record_store(None): in-process only); setup_routes(app, records)
    session = DialogSession(call_id, policy, contexts, records, caller=..., transport="sip")
    actions = await session.start()
    actions = await session.handle(Utterance(text, confidence, latency_ms))   # or Dtmf, NoInput, Hangup

and carries out the returned actions (dialog.actions) in order: Play, Listen, CollectDigits, then
possibly Route, Transfer or Hangup, after which the call has left the dialog.
"""
