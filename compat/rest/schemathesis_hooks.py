"""Schemathesis hooks: most generated cases are pointed at data that exists.

Random ids only ever reach a 404, so without this most operations with a `{cid}`,
`{mid}` or `{client}` in their path would never get past the lookup. run.sh seeds a few
conversations of each kind with messages (seed.py) and passes their ids in
`CONFAB_SEED` (JSON). Three generated cases in four (chosen by a checksum of the
generated values, so a run is repeatable) get a seeded conversation, one of its
messages and, where the body names the message's `timestamp`, that message's; the
fourth case is left as generated, so unknown ids stay tested.
"""

import json
import os
import zlib

import schemathesis

SEED = json.loads(os.environ.get("CONFAB_SEED", "{}"))

# Deleting a seeded conversation would leave every operation after it with 404s again:
# these deletes never get a seeded id (the REST suites test them on real data).
UNKNOWN_ID = "000000000000000000000000"
WHOLE_CONVERSATIONS = {
    "/1.2/rtm/conversations/{cid}",
    "/1.2/rtm/chatrooms/{cid}",
    "/1.2/rtm/service-conversations/{cid}",
    "/1.1/classes/{class}/{id}",
}


def _kind(path):
    if "/chatrooms/" in path:
        return "room"
    if "/service-conversations/" in path:
        return "service"
    if path.startswith("/1.2/rtm/broadcasts/"):
        return "broadcast"
    return "conversation"


def _check(value):
    return zlib.crc32(repr(value).encode())


@schemathesis.hook
def map_case(context, case):
    if not SEED or not case.path_parameters:
        return case
    # New containers: a generated value may be shared with other cases (and a delete of a
    # whole conversation must never see a seeded id).
    params = dict(case.path_parameters)
    path, method = case.operation.path, case.method.upper()
    if method == "DELETE" and path in WHOLE_CONVERSATIONS:
        # Schemathesis also fills ids from earlier answers: keep those off the seeds.
        seeded_ids = {c["cid"] for kind in ("conversation", "room", "service") for c in SEED.get(kind, [])}
        case.path_parameters = {k: (UNKNOWN_ID if v in seeded_ids else v) for k, v in params.items()}
        return case
    check = _check(sorted(params.items()))
    case.path_parameters = params
    if check % 4 == 0:
        return case
    check //= 4
    seeded = SEED.get(_kind(path), [])
    if not seeded:
        return case
    conversation = seeded[check % len(seeded)]
    for name in ("cid", "id"):
        if name in params:
            params[name] = conversation["cid"]
    if "class" in params:
        params["class"] = "_Conversation"
    if "client" in params:
        clients = SEED.get("clients", [])
        params["client"] = clients[check % len(clients)]
    messages = conversation.get("messages", [])
    if "mid" in params and messages:
        # Deletes take each conversation's first message, everything else the others,
        # so edits and recalls still find messages after the deletes ran.
        choices = messages[:1] if method == "DELETE" or len(messages) == 1 else messages[1:]
        mid, timestamp = choices[check % len(choices)]
        params["mid"] = mid
        if isinstance(case.body, dict) and "timestamp" in case.body:
            case.body = {**case.body, "timestamp": timestamp}
    return case
