#!/usr/bin/env python3
"""Writes docs/openapi.json: the OpenAPI 3 document of Confab's realtime REST API.

The table below is the source; run `python3 docs/openapi.py` after changing it. The
gateway's unit test `openapi_lists_every_route` fails when a served route is missing
here (or a documented one is not served), and test.sh runs schemathesis against the
real binary with this document.
"""

import json
import os

ERROR = {"$ref": "#/components/schemas/Error"}
OBJ = {"type": "object"}
ANY = {}
RECORDS = {"type": "array", "items": {"$ref": "#/components/schemas/Record"}}
SENT = {"$ref": "#/components/schemas/Sent"}
UPDATED = {"$ref": "#/components/schemas/Updated"}
RESULTS = {"type": "object", "properties": {"results": {"type": "array", "items": OBJ}}, "required": ["results"]}
RESULT_LIST = {"type": "object", "properties": {"result": {"type": "array", "items": {"type": "string"}}}}
RESULT_COUNT = {"type": "object", "properties": {"result": {"type": "integer"}}}
COUNT = {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]}
SUBS = {"type": "array", "items": {"$ref": "#/components/schemas/Subscription"}}
IDS_PAGE = {
    "type": "object",
    "properties": {"client_ids": {"type": "array", "items": {"type": "string"}}, "next": {"type": "string"}},
    "required": ["client_ids"],
}
NOTIFS = {
    "type": "object",
    "properties": {"hasMore": {"type": "boolean"}, "notifications": {"type": "array", "items": OBJ}},
    "required": ["hasMore", "notifications"],
}

NO_PUSH = "Accepted and ignored: Confab sends no mobile push notifications."


def ignored(schema, why):
    """A field the server accepts and ignores, saying so."""
    return {**schema, "description": "Accepted and ignored: " + why}


NO_SYNC = ignored({"type": "boolean"}, "in a conversation the sender's other sessions always get the message, "
                  "in a chat room never.")
PRIORITY = ignored({"type": "string"}, "messages are delivered in order, without priorities.")
PUSH_DATA = {"description": NO_PUSH}

CLIENT_IDS = {"type": "object", "properties": {"client_ids": {"type": "array", "items": {"type": "string"}}},
              "required": ["client_ids"]}
SEND = {
    "type": "object",
    "properties": {
        "from_client": {"type": "string"},
        "message": {"type": "string"},
        "transient": {"type": "boolean"},
        "no_sync": NO_SYNC,
        "push_data": PUSH_DATA,
        "priority": PRIORITY,
        "mention_all": {"type": "boolean"},
        "mention_client_ids": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
    },
    "required": ["from_client", "message"],
}
# An edit needs the new body; a recall does not take one. to_clients: service conversations only.
EDIT = {
    "type": "object",
    "properties": {
        "from_client": {"type": "string"},
        "message": {"type": "string"},
        "timestamp": {"type": "integer", "description": "the message's own timestamp (ms)"},
    },
    "required": ["from_client", "message", "timestamp"],
}
RECALL = {"type": "object", "properties": {k: v for k, v in EDIT["properties"].items() if k != "message"},
          "required": ["from_client", "timestamp"]}
TO_CLIENTS = {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 20,
              "description": "the recipients of a targeted message being changed"}
SERVICE_EDIT = {**EDIT, "properties": {**EDIT["properties"], "to_clients": TO_CLIENTS}}
SERVICE_RECALL = {**RECALL, "properties": {**RECALL["properties"], "to_clients": TO_CLIENTS}}
ATTRS = {"type": "object", "additionalProperties": True}

# The 1.1 calls take their parameters from the JSON body or the query string; the body form:
PEERS = {"oneOf": [{"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 20},
                   {"type": "string", "description": "comma-separated client ids"}]}


def legacy(required, **props):
    return {"type": "object", "properties": props, "required": list(required)}


L_SEND = legacy(["from_peer", "conv_id", "message"], from_peer={"type": "string"}, conv_id={"type": "string"},
                message={"type": "string"},
                transient={"type": "boolean", "description": "default true (1.1's default)"},
                to_peers={**PEERS, "description": "a service conversation's targeted recipients"},
                no_sync=NO_SYNC, push_data=PUSH_DATA, priority=PRIORITY)
L_PATCH = legacy(["from_peer", "conv_id", "msg_id"], from_peer={"type": "string"}, conv_id={"type": "string"},
                 msg_id={"type": "string"}, timestamp={"type": "integer"},
                 message={"type": "string", "description": "the new body (required unless recall)"},
                 recall={"type": "boolean"}, to_peers=PEERS)
L_BROADCAST = legacy(["from_peer", "conv_id", "message"], from_peer={"type": "string"}, conv_id={"type": "string"},
                     message={"type": "string"},
                     valid_till=ignored({"type": "integer"}, "a broadcast stays listed until deleted."),
                     push=PUSH_DATA, transient={"type": "boolean"})
L_BROADCAST_SUB = legacy(["from_peer", "conv_id", "message"], from_peer={"type": "string"},
                         conv_id={"type": "string"}, message={"type": "string"}, push=PUSH_DATA)
L_SUBSCRIPTION = legacy(["conv_id", "client_id"], conv_id={"type": "string"}, client_id={"type": "string"})
L_SILENCE = legacy(["conv_id", "client_id", "ttl"], conv_id={"type": "string"}, client_id={"type": "string"},
                   ttl={"type": "integer", "minimum": 1, "maximum": 86400})
L_ONLINE = legacy(["peers"], peers=PEERS)
L_KICK = legacy(["client_id"], client_id={"type": "string"}, reason={"type": "string"})

HISTORY_PARAMS = ["timestamp", "msgid", "till_timestamp", "till_msgid", "include_start", "include_stop",
                  "reversed", "limit", "client_id", "nonce", "signature_ts", "signature", "max_ts"]
QUERY_PARAMS = ["where", "order", "skip", "limit"]

# (method, path, summary, query params, body schema, success status, response schema, key)
# key: "master" (default) or "app" (the app key is enough).
OPS = []


def op(method, path, summary, query=(), body=None, status=200, response=OBJ, key="master"):
    OPS.append((method, path, summary, list(query), body, status, response, key))


for base, what in [("/1.2/rtm/conversations", "conversation"), ("/1.2/rtm/chatrooms", "chat room")]:
    op("post", base, f"Create a {what}", body=ATTRS, status=201)
    op("get", base, f"Query {what}s", QUERY_PARAMS, response=RESULTS)
    op("put", base + "/{cid}", f"Update a {what}'s attributes (not m)", body=ATTRS, response=UPDATED)
    op("delete", base + "/{cid}", f"Delete a {what} with its history")
    op("post", base + "/{cid}/messages", f"Send a message to a {what} as any client", body=SEND, response=SENT)
    op("get", base + "/{cid}/messages", f"A {what}'s history", HISTORY_PARAMS, response=RECORDS)
    op("put", base + "/{cid}/messages/{mid}", "Edit a message", body=EDIT)
    op("delete", base + "/{cid}/messages/{mid}", "Delete the server's copy of a message", ["from_client", "timestamp"])
    op("put", base + "/{cid}/messages/{mid}/recall", "Recall a message", body=RECALL)
    op("post", base + "/{cid}/temporary-silenceds", "Silence a client for ttl seconds (<= 24 h)",
       body={"type": "object", "properties": {"client_id": {"type": "string"}, "ttl": {"type": "integer"}},
             "required": ["client_id", "ttl"]})
    op("delete", base + "/{cid}/temporary-silenceds", "Lift a temporary silence", ["client_id"])
    room = what == "chat room"
    op("get", base + "/{cid}/member-infos", "Owner and managers", ["skip", "limit", "role"], response=RESULTS)
    op("post", base + "/{cid}/member-infos", "Make a client a manager" if room else "Give a member a role",
       body={"type": "object", "properties": {"clientId": {"type": "string"}, "role": {"type": "string"}},
             "required": ["clientId", "role"]}, response=UPDATED)
    op("put", base + "/{cid}/member-infos/{info}", "Change a role",
       body={"type": "object", "properties": {"role": {"type": "string"}}, "required": ["role"]},
       response=UPDATED)
    op("delete", base + "/{cid}/member-infos/{info}", "Back to no role")
    for tail, who in [("permanent-silenceds", "permanently silenced clients"),
                      ("blacklists", "blacklisted clients" + (" (they leave the room)" if room else ""))]:
        op("get", base + "/{cid}/" + tail, f"Page of {who}", ["limit", "next"], response=IDS_PAGE)
        op("post", base + "/{cid}/" + tail, f"Add {who}", body=CLIENT_IDS)
        op("delete", base + "/{cid}/" + tail, f"Remove {who}", body=CLIENT_IDS)

C = "/1.2/rtm/conversations/{cid}"
op("get", C + "/members", "Members", response=RESULT_LIST)
op("post", C + "/members", "Add members", body=CLIENT_IDS, response=UPDATED)
op("delete", C + "/members", "Remove members", body=CLIENT_IDS, response=UPDATED)
op("get", C + "/mutes", "Clients that muted the conversation", response=RESULT_LIST)
op("post", C + "/mutes", "Mute for clients", body=CLIENT_IDS, response=UPDATED)
op("delete", C + "/mutes", "Unmute for clients", body=CLIENT_IDS, response=UPDATED)
R = "/1.2/rtm/chatrooms/{cid}"
op("get", R + "/members", "Up to 50 clients in the room now", response=RESULT_LIST)
op("get", R + "/members/online-count", "Clients in the room now", response=RESULT_COUNT)

S = "/1.2/rtm/service-conversations"
op("post", S, "Create a service conversation", body=ATTRS, status=201)
op("get", S, "Query service conversations", QUERY_PARAMS, response=RESULTS)
op("put", S + "/{cid}", "Update a service conversation", body=ATTRS, response=UPDATED)
op("delete", S + "/{cid}", "Delete a service conversation")
op("post", S + "/{cid}/subscribers", "Subscribe a client",
   body={"type": "object", "properties": {"client_id": {"type": "string"}}, "required": ["client_id"]})
op("get", S + "/{cid}/subscribers", "Subscribers by client id (<= 50)", ["limit", "client_id"], response=SUBS)
op("get", S + "/{cid}/subscribers/count", "How many subscribers", response=COUNT)
op("delete", S + "/{cid}/subscribers/{client}", "Unsubscribe a client")
op("get", S + "/{cid}/subscribers/{client}/messages", "Broadcasts and messages to one subscriber",
   HISTORY_PARAMS, response=RECORDS)
op("delete", S + "/{cid}/subscribers/{client}/messages/{mid}", "Delete a message sent to one client",
   ["from_client", "timestamp"])
op("post", S + "/{cid}/broadcasts", "Send to every subscriber",
   body={"type": "object", "properties": {"from_client": {"type": "string"}, "message": {"type": "string"},
                                          "push": PUSH_DATA}, "required": ["from_client", "message"]}, response=SENT)
op("post", S + "/{cid}/messages", "Send to given clients (targeted)",
   body={"type": "object", "required": ["from_client", "message", "to_clients"],
         "properties": {**{k: v for k, v in SEND["properties"].items() if not k.startswith("mention_")},
                        "to_clients": {"type": "array", "items": {"type": "string"},
                                       "minItems": 1, "maxItems": 20}}}, response=SENT)
op("put", S + "/{cid}/messages/{mid}", "Edit a broadcast or targeted message", body=SERVICE_EDIT)
op("put", S + "/{cid}/messages/{mid}/recall", "Recall a broadcast or targeted message", body=SERVICE_RECALL)
op("get", S + "/{cid}/blacklists", "Page of blacklisted clients", ["limit", "next"], response=IDS_PAGE)
op("post", S + "/{cid}/blacklists", "Blacklist clients (unsubscribes them)", body=CLIENT_IDS)
op("delete", S + "/{cid}/blacklists", "Lift blacklisting", body=CLIENT_IDS)

op("post", "/1.2/rtm/broadcasts", "Broadcast to every client of the app",
   body={"type": "object", "properties": {"from_client": {"type": "string"}, "conv_id": {"type": "string"},
                                          "message": {"type": "string"},
                                          "valid_till": L_BROADCAST["properties"]["valid_till"],
                                          "push": PUSH_DATA, "transient": {"type": "boolean"}},
         "required": ["from_client", "conv_id", "message"]}, response=SENT)
op("get", "/1.2/rtm/broadcasts", "App-wide broadcasts of a service conversation", ["conv_id", "limit", "skip"],
   response=RECORDS)
op("delete", "/1.2/rtm/broadcasts/{mid}", "Delete an app-wide broadcast")

CL = "/1.2/rtm/clients"
op("post", CL + "/check-online", "Which clients are online (<= 20)", body=CLIENT_IDS, response=RESULTS)
op("post", CL + "/{client}/kick", "End the client's sessions (4115)",
   body={"type": "object", "properties": {"reason": {"type": "string", "maxLength": 20}}})
op("get", CL + "/{client}/unread-count", "Unread messages", ["conv_id"], response=COUNT, key="app")
op("get", CL + "/{client}/sessions", "The client's sessions (devices) on the node answering (Confab extension)",
   response={"type": "object",
             "properties": {"online": {"type": "boolean"}, "count": {"type": "integer"},
                            "sessions": {"type": "array", "maxItems": 100, "items": {
                                "type": "object",
                                "properties": {"tag": {"type": "string", "nullable": True},
                                               "protocol": {"type": "string", "enum": ["json", "protobuf", "base64"]},
                                               "version": {"type": "string", "enum": ["1", "2", "3"]},
                                               "since": {"type": "integer"}},
                                "required": ["tag", "protocol", "version", "since"]}}},
             "required": ["online", "count", "sessions"]})
op("get", CL + "/{client}/messages", "Messages the client sent", HISTORY_PARAMS, response=RECORDS)
op("get", CL + "/{client}/service-conversations", "The client's subscriptions",
   ["conv_id", "timestamp", "limit", "direction"], response=SUBS)
CONV_ID = {"type": "object", "properties": {"conv_id": {"type": "string"}}, "required": ["conv_id"]}
op("get", CL + "/{client}/blacklists", "Conversations the client blocked (by id)", ["limit", "next"],
   response={"type": "object", "properties": {"conv_ids": {"type": "array", "items": {"type": "string"}},
                                              "next": {"type": "string"}}, "required": ["conv_ids"]})
op("post", CL + "/{client}/blacklists", "Block a conversation: nobody else adds the client (4315)", body=CONV_ID)
op("delete", CL + "/{client}/blacklists", "Unblock a conversation (conv_id in the body or the query)",
   ["conv_id"], body={"type": "object", "properties": {"conv_id": {"type": "string"}}})

op("get", "/1.2/rtm/stats", "Clients online and today",
   response={"type": "object", "properties": {"result": {"type": "object", "properties": {
       "online_user_count": {"type": "integer"}, "user_count_today": {"type": "integer"}}}}})
op("get", "/1.2/rtm/all-conversations", "Conversations of every kind", QUERY_PARAMS, response=RESULTS)
op("get", "/1.2/rtm/messages", "Every message of the app", HISTORY_PARAMS, response=RECORDS)

L = "/1.1/rtm"
LH = HISTORY_PARAMS + ["convid", "from", "peerid"]
op("get", L + "/messages/history", "History: of a conversation (convid), a sender (from) or the app", LH,
   response=RECORDS)
op("get", L + "/messages/logs", "History (oldest form)", LH, response=RECORDS)
op("put", L + "/messages/logs", "Edit a message as the 1.2 edit does (a history record with the new data)",
   body={"type": "object", "properties": {"conv-id": {"type": "string"}, "msg-id": {"type": "string"},
                                          "timestamp": {"type": "integer"}, "from": {"type": "string"},
                                          "data": {"type": "string"}},
         "required": ["conv-id", "msg-id", "from", "data"], "additionalProperties": True})
op("delete", L + "/messages/logs", "Delete a record", ["convid", "msgid", "timestamp"])
op("post", L + "/messages", "Send (transient unless told otherwise; to_peers: targeted)", body=L_SEND, response=SENT)
op("post", L + "/patch/message", "Edit or recall", body=L_PATCH)
op("get", L + "/messages/unread/{client}", "Unread messages", response=COUNT, key="app")
op("get", L + "/messages/unread/{client}/{cid}", "Unread messages in a conversation", response=COUNT, key="app")
op("post", L + "/broadcast", "Broadcast to every client of the app", body=L_BROADCAST, response=SENT)
op("get", L + "/broadcast", "App-wide broadcasts", ["conv_id", "limit", "skip"], response=RECORDS)
op("delete", L + "/broadcast", "Delete an app-wide broadcast", ["mid"])
op("post", L + "/broadcast/subscriber", "Send to every subscriber", body=L_BROADCAST_SUB, response=SENT)
op("post", L + "/conversation/subscription", "Subscribe", body=L_SUBSCRIPTION)
op("delete", L + "/conversation/subscription", "Unsubscribe", ["conv_id", "client_id"])
op("get", L + "/conversation/subscription", "A client's subscriptions",
   ["client_id", "conv_id", "timestamp", "limit", "direction"], response=SUBS)
op("get", L + "/conversation/subscribers", "Subscribers", ["conv_id", "client_id", "limit"], response=SUBS)
op("get", L + "/conversation/subscribers/count", "How many subscribers", ["conv_id"], response=COUNT)
op("get", L + "/conversation/subscribed", "Whether a client subscribes", ["conv_id", "client_id"],
   response={"type": "boolean"})
op("post", L + "/conversation/blacklist", "Temporary silence (1.1's blacklist)", body=L_SILENCE)
op("delete", L + "/conversation/blacklist", "Lift a temporary silence", ["conv_id", "client_id"])
op("get", L + "/transient_group/onlines", "Clients in a chat room now", ["gid"], response=RESULT_COUNT, key="app")
op("get", L + "/transient_group/members", "Up to 50 clients in a chat room", ["gid"], response=RESULT_LIST,
   key="app")
op("post", L + "/online", "Which peers are online (<= 20)", body=L_ONLINE, response=RESULTS)
op("post", L + "/client/kick", "End a client's sessions (4115)", body=L_KICK)
for prefix, what in [("/1.1/classes", "Query"), ("/1.1/scan/classes", "Scan (cursor paging)")]:
    params = ["where", "order", "skip", "limit", "keys", "count"] if what == "Query" else ["where", "limit", "cursor", "keys"]
    response = RESULTS if what == "Query" else {
        "type": "object", "properties": {"results": {"type": "array", "items": OBJ},
                                         "cursor": {"type": "string", "nullable": True}},
        "required": ["results", "cursor"]}
    op("get", prefix + "/{class}",
       f"{what} an IM class: _Conversation, _ConversationMemberInfo (also a member's own session with "
       "X-LC-IM-Session-Token and client_id) or _SysMessage", params + (["client_id"] if what == "Query" else []),
       response=response)
MEMBERS_OP = {"type": "object", "properties": {
    "__op": {"type": "string", "enum": ["Add", "AddUnique", "Remove"]},
    "objects": {"type": "array", "items": {"type": "string"}, "minItems": 1}}, "required": ["__op", "objects"]}
CONV_ROW = {"type": "object", "additionalProperties": True, "properties": {
    "name": {"type": "string"}, "c": {"type": "string"}, "tr": {"type": "boolean"}, "sys": {"type": "boolean"},
    "unique": {"type": "boolean"},
    "m": {"oneOf": [{"type": "array", "items": {"type": "string"}}, MEMBERS_OP]}}}
op("post", "/1.1/classes/{class}",
   "Create a _Conversation as POST /1.2/rtm/conversations does (tr: a chat room, sys: a service conversation; "
   "m: an array or an Add/AddUnique operation); the other classes are read-only (403, 119)",
   ["fetchWhenSave"], body=CONV_ROW, status=201)
op("get", "/1.1/classes/{class}/{id}", "One row of an IM class", ["keys"])
op("put", "/1.1/classes/{class}/{id}",
   "Update a _Conversation: attributes as PUT /1.2/rtm/conversations/{cid}, m as an "
   "Add/AddUnique/Remove operation (the members calls)", ["fetchWhenSave"],
   body={"type": "object", "additionalProperties": True,
         "properties": {"name": {"type": "string"}, "m": MEMBERS_OP}}, response=UPDATED)
op("delete", "/1.1/classes/{class}/{id}", "Delete a _Conversation with its history")
op("get", L + "/notifications", "Conversations joined since start_ts (X-LC-IM-Session-Token)",
   ["client_id", "start_ts", "notification_type"], response=NOTIFS, key="app")

# Login signatures for LeanStorage users (createIMClient(AV.User)): the app's _rtmClientSign
# hook says whose session token it is (404 without a hook backend). See docs/hooks.md.
SIGNED = {
    "type": "object",
    "properties": {"signature": {"type": "string"}, "nonce": {"type": "string"},
                   "client_id": {"type": "string"}, "timestamp": {"type": "integer"}},
    "required": ["signature", "nonce", "client_id", "timestamp"],
}
op("post", L + "/sign", "Login signature for a LeanStorage user's session token (_rtmClientSign hook)",
   body={"type": "object", "properties": {"session_token": {"type": "string"}, "client_id": {"type": "string"}},
         "required": ["session_token"]}, response=SIGNED, key="app")
op("get", CL + "/sign", "Login signature for a LeanStorage user's session token (_rtmClientSign hook)",
   ["session_token", "client_id"], response=SIGNED, key="app")


def operation(method, path, summary, query, body, status, response, key):
    params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
              for p in [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]]
    params += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}} for q in query]
    o = {
        "summary": summary,
        "operationId": f"{method}{path}".replace("/", "_").replace("{", "").replace("}", "").replace(".", "")
        .replace("-", "_"),
        "security": [{"master": []}] if key == "master" else [{"master": []}, {"app": []}],
        "parameters": params,
        "responses": {
            str(status): {"description": "Done", "content": {"application/json": {"schema": response}}},
            "default": {"description": "LeanCloud's error", "content": {"application/json": {"schema": ERROR}}},
        },
    }
    if body is not None:
        o["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return o


def document():
    paths = {}
    for o in OPS:
        paths.setdefault(o[1], {})[o[0]] = operation(*o)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Confab realtime REST API",
            "version": "1.2",
            "description": "LeanCloud's realtime REST API (/1.2/rtm and the legacy /1.1/rtm calls) as Confab "
                           "serves it. Authenticate with X-LC-Id and X-LC-Key (the app key, or "
                           "`<masterKey>,master`), or X-LC-Sign. Errors are {code, error}. See docs/sdks.md.",
        },
        "components": {
            "securitySchemes": {
                "master": {"type": "apiKey", "in": "header", "name": "X-LC-Key",
                           "description": "`<masterKey>,master`, with X-LC-Id: <appId>"},
                "app": {"type": "apiKey", "in": "header", "name": "X-LC-Key",
                        "description": "the app key, with X-LC-Id: <appId>"},
            },
            "schemas": {
                "Error": {"type": "object", "properties": {"code": {"type": "integer"}, "error": {"type": "string"}},
                          "required": ["code", "error"]},
                "Sent": {"type": "object", "properties": {"msg-id": {"type": "string"},
                                                          "timestamp": {"type": "integer"}},
                         "required": ["msg-id", "timestamp"]},
                "Updated": {"type": "object", "properties": {"updatedAt": {"type": "string"},
                                                             "objectId": {"type": "string"}},
                            "required": ["updatedAt", "objectId"]},
                "Subscription": {"type": "object", "properties": {
                    "timestamp": {"type": "integer"}, "subscriber": {"type": "string"}, "conv_id": {"type": "string"}},
                    "required": ["timestamp", "subscriber", "conv_id"]},
                "Record": {"type": "object", "properties": {
                    "msg-id": {"type": "string"}, "timestamp": {"type": "integer"}, "conv-id": {"type": "string"},
                    "to": {"type": "string"}, "from": {"type": "string"}, "data": {"type": "string"},
                    "bin": {"type": "boolean"}, "is-conv": {"type": "boolean"}, "is-room": {"type": "boolean"}},
                    "required": ["msg-id", "timestamp", "conv-id", "from", "data"]},
            },
        },
        "paths": paths,
    }


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.json")
    with open(out, "w") as f:
        json.dump(document(), f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {out}: {len(OPS)} operations")
