-- OpenDKIM's miltertest drives pyzor-milter as Sendmail does (queue id
-- with MAIL FROM) and as Postfix does (queue id from RCPT TO on; miltertest
-- cannot send end-of-message macros).
-- Globals from the test (miltertest -D): port, spam_digest, clean_digest, server.
-- The spam message is reported to the server; the milter rejects it.

local function fail(message)
  print("FAIL: " .. message)
  os.exit(1)
end

local function open()
  local conn = mt.connect("inet:" .. port .. "@127.0.0.1", 40, 0.25)
  if conn == nil then fail("cannot connect to the milter") end
  if mt.conninfo(conn, "client.example.org", "192.0.2.9") ~= nil then
    fail("conninfo failed")
  end
  return conn
end

local function send(conn, sendmail, subject, body)
  if sendmail then
    mt.macro(conn, SMFIC_MAIL, "i", "5A1B2c3D000777", "{mail_host}", "example.org.")
  end
  if mt.mailfrom(conn, "<sender@example.org>") ~= nil then fail("mailfrom failed") end
  if not sendmail then
    -- Postfix: no queue id at MAIL FROM; it comes with RCPT TO and later.
    mt.macro(conn, SMFIC_RCPT, "i", "4QX9Y1234", "{rcpt_addr}", "rcpt@example.net")
  end
  if mt.rcptto(conn, "<rcpt@example.net>") ~= nil then fail("rcptto failed") end
  mt.header(conn, "From", "Sender <sender@example.org>")
  mt.header(conn, "To", "rcpt@example.net")
  mt.header(conn, "Subject", subject)
  mt.header(conn, "X-Pyzor", "whitelisted; forged")
  if mt.eoh(conn) ~= nil then fail("eoh failed") end
  if mt.bodystring(conn, body) ~= nil then fail("body failed") end
  if mt.eom(conn) ~= nil then fail("eom failed") end
end

local body = "This is the body of the miltertest message for the milter.\r\n" ..
  "It has a few lines of plain text that are long enough to count.\r\n" ..
  "The digest of this text is what the Pyzor server is asked about.\r\n" ..
  "Kind regards from the test suite and its friendly robots.\r\n"

-- Clean: accepted, spoofed header removed, ours added.
local conn = open()
send(conn, true, "clean", body)
if mt.getreply(conn) ~= SMFIR_ACCEPT then fail("clean message not accepted") end
if not mt.eom_check(conn, MT_HDRDELETE, "X-Pyzor") then
  fail("spoofed X-Pyzor not removed")
end
-- With SMFIP_HDR_LEADSPC negotiated the value carries its leading space.
local expected = "clean; digest=" .. clean_digest .. "; " .. server .. "=0/0"
if not (mt.eom_check(conn, MT_HDRADD, "X-Pyzor", expected) or
        mt.eom_check(conn, MT_HDRADD, "X-Pyzor", " " .. expected)) then
  fail("no clean X-Pyzor header")
end
mt.disconnect(conn)

-- Reported: rejected at end of data, with Postfix's macro habits.
conn = open()
send(conn, false, "spam", "Buy now! " .. body)
local reply = mt.getreply(conn)
if reply ~= SMFIR_REPLYCODE then fail("reported message not rejected: " .. tostring(reply)) end
mt.disconnect(conn)
print("ok")
