"""LeanCloud's unmodified Python SDK (PyPI `leancloud` 3.0.2) against Confab's REST API.

The SDK's realtime helpers call the legacy 1.1 endpoints: `Conversation.send` and
`Conversation.broadcast` (POST /1.1/rtm/messages, /1.1/rtm/broadcast), and
`Message.find_by_conversation` / `find_by_client` / `find_all` (GET
/1.1/rtm/messages/history, with `max_ts` as a float and `reversed=True`). It reaches
Confab through LEANCLOUD_API_SERVER and authenticates with X-AVOSCloud-Master-Key.

`Conversation().save()`, `add_member`, `remove("m", …)`, `fetch()` and `destroy()` write
and read `_Conversation` through the storage API (/1.1/classes/_Conversation).

Usage: python_sdk.py URL APP_ID MASTER_KEY. Prints "N passed, M failed".
"""

import json
import os
import sys
import time
import urllib.request

url, app_id, master = sys.argv[1:4]
os.environ["LEANCLOUD_API_SERVER"] = url

import leancloud  # noqa: E402
from leancloud.message import Message  # noqa: E402

leancloud.init(app_id, master_key=master)

passed, failed = 0, 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def rest(method, path, body=None):
    """A 1.2 call with the master key, for setting up and checking."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method, headers={
        "X-LC-Id": app_id, "X-LC-Key": master + ",master", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


conv_id = rest("POST", "/1.2/rtm/conversations", {"m": ["alice", "bob"], "name": "py"})["objectId"]
conv = leancloud.Conversation.create_without_data(conv_id)

# send: a dict message is sent as its JSON text; transient=False is stored.
conv.send("alice", {"_lctype": -1, "_lctext": "hello from python"})
conv.send("bob", "plain text")
conv.send("bob", "typing…", transient=True)
history = rest("GET", f"/1.2/rtm/conversations/{conv_id}/messages")
check("Conversation.send stores non-transient messages", [m["from"] for m in history] == ["bob", "alice"],
      history)
check("a dict message arrives as its JSON", json.loads(history[1]["data"])["_lctext"] == "hello from python")

# find_by_conversation: newest first, limit, before_time (a float max_ts), reversed.
found = Message.find_by_conversation(conv_id)
check("find_by_conversation reads the history", [m.data for m in found] == ["plain text", history[1]["data"]],
      [m.data for m in found])
check("records map onto Message", found[0].from_client == "bob" and found[0].conversation_id == conv_id
      and found[0].message_id == history[0]["msg-id"] and not found[0].bin)
newest = found[0]
older = Message.find_by_conversation(conv_id, before_time=newest.timestamp, before_message_id=newest.message_id)
check("find_by_conversation pages with before_time", [m.from_client for m in older] == ["alice"],
      [m.from_client for m in older])
oldest_first = Message.find_by_conversation(conv_id, reversed=True)
check("find_by_conversation reversed=True is oldest first",
      [m.from_client for m in oldest_first] == ["alice", "bob"])
check("find_by_conversation limit", len(Message.find_by_conversation(conv_id, limit=1)) == 1)

# find_by_client and find_all.
by_bob = Message.find_by_client("bob")
check("find_by_client", [m.data for m in by_bob] == ["plain text"], [m.data for m in by_bob])
check("find_all", len(Message.find_all()) == 2)

# A service conversation: targeted send (to_clients) and an app-wide broadcast.
svc = rest("POST", "/1.2/rtm/service-conversations", {"name": "py-news"})["objectId"]
rest("POST", f"/1.2/rtm/service-conversations/{svc}/subscribers", {"client_id": "bob"})
sys_conv = leancloud.Conversation.create_without_data(svc)
sys_conv.send("sys", "just for bob", to_clients=["bob"])
got = rest("GET", f"/1.2/rtm/service-conversations/{svc}/subscribers/bob/messages")
check("Conversation.send with to_clients is a targeted message", [m["data"] for m in got] == ["just for bob"], got)
sys_conv.broadcast("sys", "to everyone", valid_till=int(time.time() * 1000) + 3_600_000)
listed = rest("GET", f"/1.2/rtm/broadcasts?conv_id={svc}")
check("Conversation.broadcast is an app-wide broadcast", [m["data"] for m in listed] == ["to everyone"], listed)

# The storage API's _Conversation (§3.8): Conversation().save(), add_member, remove, fetch, destroy.
saved = leancloud.Conversation("py-saved")
saved.add_member("alice")
saved.add_member("bob")
saved.save()
check("Conversation().save() creates through /1.1/classes/_Conversation", bool(saved.id) and
      rest("GET", f"/1.2/rtm/conversations/{saved.id}/members")["result"] == ["alice", "bob"], saved.id)
saved.add_member("carol")
saved.save()
saved.remove("m", "alice")
saved.set("topic", "py")
saved.save()
members = rest("GET", f"/1.2/rtm/conversations/{saved.id}/members")["result"]
check("add_member and remove('m', …) change the members", members == ["bob", "carol"], members)
fetched = leancloud.Conversation.create_without_data(saved.id)
fetched.fetch()
check("fetch() reads the row", fetched.name == "py-saved" and fetched.get("topic") == "py"
      and fetched.members == ["bob", "carol"], fetched.dump())
room = leancloud.Conversation("py-room", is_transient=True)
room.save()
check("Conversation(is_transient=True) is a chat room",
      rest("GET", f"/1.2/rtm/chatrooms/{room.id}/members")["result"] == [])
saved.destroy()
try:
    leancloud.Conversation.create_without_data(saved.id).fetch()
    check("destroy() deletes the conversation", False, "still there")
except leancloud.LeanCloudError as e:
    check("destroy() deletes the conversation", e.code == 101, e)

# Errors come back as LeanCloudError with LeanCloud's code.
try:
    leancloud.Conversation.create_without_data("000000000000000000000000").send("a", "x")
    check("an unknown conversation raises", False, "no error")
except leancloud.LeanCloudError as e:
    check("an unknown conversation raises LeanCloudError 4303", e.code == 4303, e)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
