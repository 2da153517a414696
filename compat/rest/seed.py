"""Seeds the schema app with conversations of every kind and messages in them, and
prints their ids as JSON for schemathesis_hooks.py (`CONFAB_SEED`)."""

import json
import sys
import urllib.request

URL = sys.argv[1]
HEADERS = {"X-LC-Id": "schema-app", "X-LC-Key": "schema-master,master", "Content-Type": "application/json"}


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, method=method, data=data, headers=HEADERS)
    with urllib.request.urlopen(req, timeout=10) as answer:
        return json.loads(answer.read() or b"null")


def sent(answer):
    """[msg-id, timestamp] of a send's answer."""
    answer = answer.get("result", answer)
    return [answer["msg-id"], answer["timestamp"]]


def messages(path, n, sender):
    return [sent(call("POST", path, {"from_client": sender, "message": f"seed {i}"})) for i in range(n)]


seed = {"clients": ["alice", "bob"], "conversation": [], "room": [], "service": [], "broadcast": []}
for i in range(3):
    cid = call("POST", "/1.2/rtm/conversations", {"m": ["alice", "bob"], "name": f"seed {i}"})["objectId"]
    seed["conversation"].append({"cid": cid, "messages": messages(f"/1.2/rtm/conversations/{cid}/messages", 3, "alice")})
    rid = call("POST", "/1.2/rtm/chatrooms", {"name": f"room {i}"})["objectId"]
    seed["room"].append({"cid": rid, "messages": messages(f"/1.2/rtm/chatrooms/{rid}/messages", 3, "alice")})
    sid = call("POST", "/1.2/rtm/service-conversations", {"name": f"service {i}"})["objectId"]
    call("POST", f"/1.2/rtm/service-conversations/{sid}/subscribers", {"client_id": "alice"})
    path = f"/1.2/rtm/service-conversations/{sid}/broadcasts"
    seed["service"].append({"cid": sid, "messages": messages(path, 3, "sys")})
everyone = {"from_client": "sys", "conv_id": seed["service"][0]["cid"], "message": "to everyone"}
seed["broadcast"].append({"cid": "", "messages": [sent(call("POST", "/1.2/rtm/broadcasts", everyone))]})
print(json.dumps(seed))
