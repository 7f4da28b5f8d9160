from tests.integration.test_replay import *  # noqa

async def test_dbg(stack_env, publisher, worker, engine, settings, codec):
    offer_id = await start_offer(publisher)
    await termsheet_issued(engine, offer_id)
    for topic in LIFECYCLE_TOPICS:
        recs = await read_all(settings, topic)
        print(topic, len(recs), await end_offsets(settings, topic))
        for r in recs[:2]:
            try:
                e = await codec.decode_event(EVENT_BY_TOPIC[topic], r.value)
                print("ok", e.event_id)
            except Exception as exc:
                print("ERR", type(exc), exc)
