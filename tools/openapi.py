#!/usr/bin/env python3
"""Writes src/api/openapi.json, the OpenAPI 3.1 description of the HTTP API.

The description is kept here in compact form; `cargo test --test openapi`
checks that it and the router list the same operations. Run
`python3 tools/openapi.py` after changing either.
"""
import json, os

def nullable(t): return {"type": [t, "null"]}
S = {"type": "string"}
I = {"type": "integer"}
B = {"type": "boolean"}
ref = lambda n: {"$ref": f"#/components/schemas/{n}"}
arr = lambda x: {"type": "array", "items": x}
def obj(props, required=None, extra=True):
    o = {"type": "object", "properties": props}
    if required: o["required"] = required
    if not extra: o["additionalProperties"] = False
    return o

schemas = {
  "Problem": obj({"type": S, "status": I, "detail": S, "limit": S}, ["type", "status"]),
  "Error": obj({"error": obj({"code": S, "message": S, "field": S}, ["code", "message"])}, ["error"]),
  "Person": obj({"name": nullable("string"), "email": S}, ["email"]),
  "Attachment": obj({"index": I, "filename": nullable("string"), "content_type": S, "size": I, "content_id": nullable("string")}),
  "Delivery": obj({"recipient": S, "state": {"type": "string", "enum": ["queued", "sending", "sent", "deferred", "failed", "bounced"]},
                   "attempts": I, "last_error": nullable("string"), "next_attempt_at": nullable("string"), "sent_at": nullable("string")}),
  "Message": obj({
      "id": I, "side_conversation_id": nullable("integer"), "direction": {"type": "string", "enum": ["in", "out"]},
      "message_id": nullable("string"), "in_reply_to": nullable("string"), "references": arr(S),
      "from": {"anyOf": [ref("Person"), {"type": "null"}]}, "reply_to": nullable("string"),
      "to": arr(ref("Person")), "cc": arr(ref("Person")), "subject": S, "date": nullable("string"), "received_at": S,
      "text": nullable("string"), "html": nullable("string"), "visible_reply": nullable("string"),
      "attachments": arr(ref("Attachment")),
      "kind": {"type": "string", "enum": ["reply", "auto_reply", "bounce", "verification", "forwarding_confirmation", "agent", "notification", "agent_reply", "agent_reply_unverified"]},
      "flags": arr(S),
      "route": {"type": "string", "enum": ["token", "references", "forwarding", "bounce", "unrouted", "api", "portal"]},
      "auth": {"anyOf": [obj({"spf": {}, "dkim": {}, "dmarc": {}, "arc": {}, "detail": {}}), {"type": "null"}]},
      "delivery": {"anyOf": [arr(ref("Delivery")), {"type": "null"}]},
      "bounce": {"anyOf": [obj({"recipient": {}, "status": {}, "diagnostic": {}}), {"type": "null"}]},
      "truncated": B,
  }, ["id", "direction", "kind", "route", "flags", "attachments"]),
  "SideConversation": obj({
      "id": I, "parent": S, "token": S, "reply_address": S, "subject": S, "status": {"type": "string", "enum": ["open", "closed"]},
      "sender": S, "participants": arr(S), "assignee": nullable("string"), "portal_url": nullable("string"),
      "waiting": {"type": ["string", "null"], "enum": ["vendor", "agent", None]}, "waiting_since": nullable("string"), "tags": arr(S),
      "remind_after": nullable("string"), "nudge_vendor": B,
      "created_at": S, "updated_at": S, "messages": arr(ref("Message")), "messages_next_cursor": nullable("string")},
      ["id", "parent", "token", "reply_address", "subject", "status", "sender", "participants"]),
  "Parent": obj({
      "external_id": S, "subject": S, "requester": obj({"name": nullable("string"), "email": nullable("string")}),
      "status": {"type": "string", "enum": ["open", "snoozed", "closed"]}, "snoozed_until": nullable("string"),
      "assignee": nullable("string"), "created_at": S, "updated_at": S, "side_conversations": arr(ref("SideConversation"))},
      ["external_id", "status", "side_conversations"]),
  "Activity": obj({"id": I, "text": S, "side_conversation_id": nullable("integer"), "actor": nullable("string"), "created_at": S}),
  "Contact": obj({"id": I, "email": S, "name": nullable("string"), "first_message_id": nullable("integer"), "created_at": S}),
  "User": obj({"id": I, "email": S, "name": S, "role": {"type": "string", "enum": ["owner", "admin", "member", "viewer"]},
               "notifications": {"type": "string", "enum": ["email", "off"]}, "active": B,
               "deactivated_at": nullable("string"), "created_at": S, "token": S},
              ["id", "email", "name", "role"]),
  "AuditEntry": obj({"id": I, "at": S, "actor": S, "actor_id": nullable("integer"), "action": S, "target": S, "detail": {}},
                    ["id", "at", "actor", "action", "target", "detail"]),
  "Settings": obj({"signature": obj({"text": nullable("string"), "html": nullable("string")}),
                   "default_sender": nullable("string"), "side_conversations_enabled": B, "remind_after": nullable("string")}),
  "Check": obj({"status": {"type": "string", "enum": ["pass", "missing", "mismatch", "error", "unknown"], "description": "unknown: SPF only, when [outbound] spf gives nothing to check against (detail says why)"}, "record_to_publish": nullable("string"),
                 "detail": S, "record_name": nullable("string")}),
  "Sender": obj({"email": S, "name": S, "reply_mode": {"type": "string", "enum": ["gateway", "plus", "none"]},
                 "status": {"type": "string", "enum": ["pending", "verified"]}, "forwarding_address": S,
                 "forwarding": {"type": "string", "enum": ["unknown", "confirmed"]}, "forwarding_confirmed_at": nullable("string"),
                 "forwarding_confirmation": {"anyOf": [obj({"provider": S, "code": nullable("string"), "link": nullable("string")}), {"type": "null"}]},
                 "dns": {"anyOf": [obj({"spf": {"$ref": "#/components/schemas/Check"}, "dkim": {"$ref": "#/components/schemas/Check"}, "dmarc": {"$ref": "#/components/schemas/Check"}}), {"type": "null"}]},
                 "dns_checked_at": nullable("string"), "signature": obj({"text": nullable("string"), "html": nullable("string")}),
                 "verified_at": nullable("string"), "created_at": S, "instructions": {"type": "object"}},
                ["email", "status", "forwarding_address", "forwarding"]),
  "Webhook": obj({"id": I, "url": S, "events": arr(S), "active": B, "created_at": S}, ["id", "url", "events"]),
  "WebhookDelivery": obj({"id": I, "webhook_id": I, "event": S, "payload": {}, "state": S, "attempts": I,
                          "next_attempt_at": S, "last_status": {}, "last_error": {}, "created_at": S, "delivered_at": nullable("string")}),
  "Template": obj({"id": I, "name": S, "to": arr(S), "cc": arr(S), "subject": S, "body_text": nullable("string"),
                   "body_html": nullable("string"), "tags": arr(S), "created_at": S}, ["id", "name", "to", "cc", "subject"]),
  "ReportRow": obj({"key": nullable("string"), "opened": I, "closed": I, "first_reply_p50_s": nullable("integer"),
                    "first_reply_p90_s": nullable("integer"), "close_p50_s": nullable("integer"), "open_now": I,
                    "open_by_age": obj({"<1d": I, "1-3d": I, "3-7d": I, ">7d": I}), "bounce_rate": nullable("number"),
                    "unverified_rate": nullable("number")},
                   ["key", "opened", "closed", "open_now", "open_by_age"]),
  "AttachmentIn": obj({"filename": S, "content_type": S, "content_base64": S}, ["filename", "content_type", "content_base64"], False),
}
page = lambda item: obj({"items": arr(ref(item)), "next_cursor": nullable("string")}, ["items", "next_cursor"])

def or_null(schema):
    return schema if schema.get("type") == "null" or "null" in (schema.get("type") or []) else {"anyOf": [schema, {"type": "null"}]}

def body(props, required=None):
    # An optional field may also be null, which means "not given".
    props = {k: (v if k in (required or []) else or_null(v)) for k, v in props.items()}
    return {"required": True, "content": {"application/json": {"schema": obj(props, required, False)}}}

ERR = {"description": "error", "content": {"application/json": {"schema": ref("Error")}}}
PROBLEM = {"description": "an RFC 7807 problem (JMAP request-level error)", "content": {"application/problem+json": {"schema": ref("Problem")}}}
def responses(ok_code, ok_schema, errors):
    r = {str(ok_code): {"description": "success", "content": {"application/json": {"schema": ok_schema}}}}
    for e in errors: r[str(e)] = ERR
    return r
def binary(ctype):
    return {"200": {"description": "the bytes", "content": {ctype: {"schema": {"type": "string", "format": "binary"}}}},
            "401": ERR, "403": ERR, "404": ERR, "400": ERR, "429": ERR}

# 429: the caller's address sent too many bad tokens (limits.login_failures
# per limits.login_window); the answer carries Retry-After.
AUTH = [401, 403, 400, 429]
pid = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "format": "int64"}}
pext = {"name": "external_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 200}}
pemail = {"name": "email", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}}
cursor = {"name": "cursor", "in": "query", "schema": {"type": "string"}}

start_props = {"to": arr(S), "cc": arr(S), "subject": S, "body_text": S, "body_html": S, "from": S,
               "include_context": B, "share_portal_link": B, "attachments": arr(ref("AttachmentIn")), "template": I, "tags": arr(S),
               "remind_after": {"type": ["string", "null"], "description": "remind after this delay without a vendor reply (90m, 12h, 2d, 1w); null or off: never; left out: the workspace default"},
               "nudge_vendor": B}

paths = {
  "/healthz": {"get": {"operationId": "health", "security": [], "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": obj({"status": S})}}}}}},
  "/api/parents/{external_id}": {
    "parameters": [pext],
    "put": {"operationId": "upsertParent", "requestBody": body({"subject": S, "requester": obj({"name": nullable("string"), "email": nullable("string")}, None, False),
            "status": {"type": "string", "enum": ["open", "snoozed", "closed"]}, "snoozed_until": nullable("string"), "assignee": nullable("string")}),
            "responses": {**responses(200, ref("Parent"), AUTH + [404, 409, 413, 422]), "201": {"description": "created", "content": {"application/json": {"schema": ref("Parent")}}}}},
    "get": {"operationId": "getParent", "responses": responses(200, ref("Parent"), AUTH + [404])}},
  "/api/parents/{external_id}/activity": {"parameters": [pext], "get": {"operationId": "parentActivity", "parameters": [limit, cursor], "responses": responses(200, page("Activity"), AUTH + [404])}},
  "/api/parents/{external_id}/side-conversations": {"parameters": [pext], "post": {"operationId": "startSideConversation", "requestBody": body(start_props),
            "responses": {**responses(201, ref("SideConversation"), AUTH + [404, 409, 413, 422])}}},
  "/api/side-conversations": {"get": {"operationId": "listSideConversations", "parameters": [
            {"name": "parent", "in": "query", "schema": S}, {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["open", "closed"]}},
            {"name": "waiting", "in": "query", "schema": {"type": "string", "enum": ["vendor", "agent"]}, "description": "only those waiting on the vendor or on an agent, longest waiting first"},
            {"name": "older_than", "in": "query", "schema": S, "description": "with waiting: waiting at least this long (90m, 12h, 2d, 1w)"},
            {"name": "tag", "in": "query", "schema": S}, limit, cursor],
            "responses": responses(200, page("SideConversation"), AUTH)}},
  "/api/side-conversations/{id}": {"parameters": [pid], "get": {"operationId": "getSideConversation",
            "description": "The thread: a page of its messages in order (limit, default 100; cursor from messages_next_cursor), each body cut at 16 KiB characters (truncated: true; the whole message is GET /api/messages/{id}).",
            "parameters": [limit, cursor],
            "responses": responses(200, ref("SideConversation"), AUTH + [404])},
            "patch": {"operationId": "patchSideConversation", "requestBody": body({"tags": arr(S), "remind_after": nullable("string"), "nudge_vendor": B}),
            "responses": responses(200, ref("SideConversation"), AUTH + [404, 413, 422])}},
  "/api/side-conversations/{id}/messages": {"parameters": [pid], "post": {"operationId": "followUp",
            "requestBody": body({"body_text": S, "body_html": S, "cc": arr(S), "attachments": arr(ref("AttachmentIn"))}),
            "responses": responses(201, ref("Message"), AUTH + [404, 409, 413, 422])}},
  "/api/side-conversations/{id}/close": {"parameters": [pid], "post": {"operationId": "close", "responses": responses(200, ref("SideConversation"), AUTH + [404, 409])}},
  "/api/side-conversations/{id}/reopen": {"parameters": [pid], "post": {"operationId": "reopen", "responses": responses(200, ref("SideConversation"), AUTH + [404, 409])}},
  "/api/side-conversations/{id}/portal/revoke": {"parameters": [pid], "post": {"operationId": "revokePortal",
            "description": "Turns the vendor portal link off for good; the answer's portal_url is null. Idempotent.",
            "responses": responses(200, ref("SideConversation"), AUTH + [404])}},
  "/api/side-conversations/{id}/participants": {"parameters": [pid], "post": {"operationId": "admitParticipant",
            "description": "Admits a sender (of unverified mail, say) as a participant: they receive follow-ups and a portal link from then on.",
            "requestBody": body({"email": S, "name": S}, ["email"]),
            "responses": responses(201, ref("SideConversation"), AUTH + [404, 409, 413, 422])}},
  "/api/side-conversations/{id}/participants/{email}": {"parameters": [pid, pemail], "delete": {"operationId": "removeParticipant",
            "description": "Removes a participant; their portal link stops working.",
            "responses": responses(200, ref("SideConversation"), AUTH + [404])}},
  "/api/messages/{id}": {"parameters": [pid], "get": {"operationId": "getMessage", "responses": responses(200, ref("Message"), AUTH + [404])}},
  "/api/messages/{id}/raw": {"parameters": [pid], "get": {"operationId": "getRawMessage", "responses": binary("message/rfc822")}},
  "/api/messages/{id}/attachments/{n}": {"parameters": [pid, {"name": "n", "in": "path", "required": True, "schema": {"type": "integer", "format": "int64"}}],
            "get": {"operationId": "getAttachment", "responses": binary("application/octet-stream")}},
  "/api/unrouted": {"get": {"operationId": "listUnrouted", "parameters": [limit, cursor], "responses": responses(200, page("Message"), AUTH)}},
  "/api/unrouted/{id}/assign": {"parameters": [pid], "post": {"operationId": "assignUnrouted", "requestBody": body({"side_conversation_id": I}, ["side_conversation_id"]),
            "responses": responses(200, ref("Message"), AUTH + [404, 409, 413, 422])}},
  "/api/contacts": {"get": {"operationId": "listContacts", "parameters": [limit, cursor], "responses": responses(200, page("Contact"), AUTH)}},
  "/api/users": {
    "post": {"operationId": "createUser", "requestBody": body({"email": S, "name": S, "role": {"type": "string", "enum": ["owner", "admin", "member", "viewer"]}}, ["email", "name"]),
             "responses": responses(201, ref("User"), AUTH + [409, 413, 422])},
    "get": {"operationId": "listUsers", "responses": responses(200, page("User"), AUTH)}},
  "/api/users/{id}": {"parameters": [pid],
    "patch": {"operationId": "updateUser", "requestBody": body({"role": {"type": "string", "enum": ["owner", "admin", "member", "viewer"]}, "name": S, "active": B}),
              "responses": responses(200, ref("User"), AUTH + [404, 409, 413, 422])}},
  "/api/users/{id}/token": {"parameters": [pid],
    "post": {"operationId": "rotateUserToken", "responses": responses(200, ref("User"), AUTH + [404])}},
  "/api/reports/side-conversations": {"get": {"operationId": "reportSideConversations",
            "description": "Per group: opened and closed in [from, to) (default: the 30 days before now; at most 366 days), nearest-rank percentiles of the seconds to the first vendor reply and to closing, open now by age, bounce and unverified-sender rates. Accept: text/csv gives CSV.",
            "parameters": [{"name": "from", "in": "query", "schema": S}, {"name": "to", "in": "query", "schema": S},
                           {"name": "group_by", "in": "query", "schema": {"type": "string", "enum": ["vendor_domain", "tag", "agent", "sender"]}}],
            "responses": {**responses(200, obj({"from": S, "to": S, "group_by": S, "rows": arr(ref("ReportRow"))}), AUTH),
                          "200": {"description": "the report", "content": {"application/json": {"schema": obj({"from": S, "to": S, "group_by": S, "rows": arr(ref("ReportRow"))})},
                                                                             "text/csv": {"schema": S}}}}}},
  "/api/audit": {"get": {"operationId": "listAudit", "parameters": [limit, cursor], "responses": responses(200, page("AuditEntry"), AUTH)}},
  "/api/me": {
    "get": {"operationId": "getMe", "responses": responses(200, ref("User"), AUTH)},
    "put": {"operationId": "putMe", "requestBody": body({"name": S, "notifications": {"type": "string", "enum": ["email", "off"]}}),
            "responses": responses(200, ref("User"), AUTH + [413, 422])}},
  "/api/settings": {
    "get": {"operationId": "getSettings", "responses": responses(200, ref("Settings"), AUTH)},
    "put": {"operationId": "putSettings", "requestBody": body({"signature": obj({"text": nullable("string"), "html": nullable("string")}, None, False),
            "default_sender": nullable("string"), "side_conversations_enabled": B, "remind_after": nullable("string")}), "responses": responses(200, ref("Settings"), AUTH + [413, 422])}},
  "/api/senders": {
    "post": {"operationId": "createSender", "requestBody": body({"email": S, "name": S, "reply_mode": {"type": "string", "enum": ["gateway", "plus", "none"]},
             "signature": obj({"text": nullable("string"), "html": nullable("string")}, None, False), "dkim_algorithm": {"type": "string", "enum": ["rsa", "ed25519"]}}, ["email"]),
             "responses": responses(201, ref("Sender"), AUTH + [409, 413, 422])},
    "get": {"operationId": "listSenders", "responses": responses(200, page("Sender"), AUTH)}},
  "/api/senders/{email}": {"parameters": [pemail],
    "get": {"operationId": "getSender", "responses": responses(200, ref("Sender"), AUTH + [404])},
    "delete": {"operationId": "deleteSender", "responses": {"204": {"description": "deleted"}, **{str(e): ERR for e in AUTH + [404]}}},
    "patch": {"operationId": "updateSender", "requestBody": body({"name": S, "reply_mode": {"type": "string", "enum": ["gateway", "plus", "none"]},
              "signature": obj({"text": nullable("string"), "html": nullable("string")}, None, False)}),
              "responses": responses(200, ref("Sender"), AUTH + [404, 413, 422])}},
  "/api/senders/{email}/verify": {"parameters": [pemail], "post": {"operationId": "verifySender", "requestBody": body({"code": S}, ["code"]),
             "responses": responses(200, ref("Sender"), AUTH + [404, 409, 413, 422])}},
  "/api/senders/{email}/check": {"parameters": [pemail], "post": {"operationId": "checkSender", "responses": responses(200, ref("Sender"), AUTH + [404])}},
  "/api/webhooks": {
    "post": {"operationId": "createWebhook", "requestBody": body({"url": S, "secret": S, "events": arr(S)}, ["url", "secret"]),
             "responses": responses(201, ref("Webhook"), AUTH + [413, 422])},
    "get": {"operationId": "listWebhooks", "responses": responses(200, page("Webhook"), AUTH)}},
  "/api/webhooks/{id}": {"parameters": [pid], "delete": {"operationId": "deleteWebhook", "responses": {"204": {"description": "deleted"}, **{str(e): ERR for e in AUTH + [404]}}}},
  "/api/webhooks/{id}/deliveries": {"parameters": [pid], "get": {"operationId": "webhookDeliveries", "parameters": [limit, cursor],
             "responses": responses(200, page("WebhookDelivery"), AUTH + [404])}},
  "/api/templates": {
    "post": {"operationId": "createTemplate", "requestBody": body({"name": S, "to": arr(S), "cc": arr(S), "subject": S, "body_text": S, "body_html": S, "tags": arr(S)}, ["name"]),
             "responses": responses(201, ref("Template"), AUTH + [413, 422])},
    "get": {"operationId": "listTemplates", "responses": responses(200, page("Template"), AUTH)}},
  "/api/templates/{id}": {"parameters": [pid], "delete": {"operationId": "deleteTemplate", "responses": {"204": {"description": "deleted"}, **{str(e): ERR for e in AUTH + [404]}}}},
  # JMAP (RFC 8620/8621 subset, SPEC §9). Bodies are generic JSON: the
  # method calls' own shapes are the RFCs'. Request-level errors are
  # RFC 7807 problem documents.
  "/.well-known/jmap": {"get": {"operationId": "jmapSession", "description": "The JMAP session resource of the calling user.",
            "responses": {"200": {"description": "the session", "content": {"application/json": {"schema": obj({"capabilities": {"type": "object"}, "accounts": {"type": "object"},
                "primaryAccounts": {"type": "object"}, "username": S, "apiUrl": S, "downloadUrl": S, "uploadUrl": S, "eventSourceUrl": S, "state": S},
                ["capabilities", "accounts", "primaryAccounts", "username", "apiUrl", "downloadUrl", "uploadUrl", "eventSourceUrl", "state"])}}}, "401": ERR}}},
  "/jmap": {"post": {"operationId": "jmapApi", "description": "A JMAP Request object: method calls run in order, with result references.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": obj({
                "using": arr({"type": "string", "enum": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]}),
                "methodCalls": arr({"type": "array", "prefixItems": [S, {"type": "object"}, S], "minItems": 3, "maxItems": 3}),
                "createdIds": {"type": "object", "additionalProperties": S}}, ["using", "methodCalls"])}}},
            "responses": {"200": {"description": "the Response object", "content": {"application/json": {"schema": obj({"methodResponses": arr({"type": "array"}),
                "sessionState": S, "createdIds": {"type": "object"}}, ["methodResponses", "sessionState"])}}},
                "400": PROBLEM, "413": PROBLEM, "429": PROBLEM, "401": ERR}}},
  "/jmap/download/{account}/{blob}/{name}": {"parameters": [
            {"name": "account", "in": "path", "required": True, "schema": S}, {"name": "blob", "in": "path", "required": True, "schema": S},
            {"name": "name", "in": "path", "required": True, "schema": S}],
            "get": {"operationId": "jmapDownload", "parameters": [{"name": "accept", "in": "query", "schema": S}],
                    "responses": {"200": {"description": "the blob, as the accept type", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                                  "400": ERR, "401": ERR, "404": ERR}}},
  "/jmap/upload/{account}": {"parameters": [{"name": "account", "in": "path", "required": True, "schema": S}],
            "post": {"operationId": "jmapUpload", "description": "Uploads are not supported: always 403.",
                     "responses": {"403": PROBLEM, "401": ERR}}},
  "/jmap/eventsource": {"get": {"operationId": "jmapEventSource", "description": "Push of JMAP state changes (RFC 8620 §7.3), a text/event-stream that stays open.",
            "parameters": [{"name": "types", "in": "query", "schema": S}, {"name": "closeafter", "in": "query", "schema": {"type": "string", "enum": ["state", "no"]}},
                           {"name": "ping", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
            "responses": {"200": {"description": "the event stream", "content": {"text/event-stream": {"schema": S}}}, "400": PROBLEM, "401": ERR, "429": PROBLEM, "503": PROBLEM}}},
  "/api/openapi.json": {"get": {"operationId": "openapi", "security": [], "responses": {"200": {"description": "this document", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
}

doc = {
  "openapi": "3.1.0",
  "info": {"title": "backchannel", "version": "0.1.0",
           "description": "Side conversations over email: the HTTP API of SPEC §7. Errors are {\"error\":{\"code\",\"message\"}}; lists are paginated with limit and an opaque cursor."},
  "servers": [{"url": "/"}],
  "security": [{"bearer": []}],
  "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": schemas},
  "paths": paths,
}
out = os.path.join(os.path.dirname(__file__), "..", "src", "api", "openapi.json")
with open(out, "w") as f:
    json.dump(doc, f, indent=1, sort_keys=True)
    f.write("\n")
print("wrote", os.path.normpath(out))
