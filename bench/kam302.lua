-- Kamailio app_lua for the lua row (bench/kamailio.cfg, -A WITH_LUA): the
-- decision of bench/py302.py (INVITE -> 302 to sip:x@127.0.0.1, anything
-- else 200) written in Lua and run inside Kamailio's worker processes, with
-- the same stateful reply as the app_python3 row: t_newtran,
-- append_to_reply of the Contact, t_reply.
function bench302()
    local code, reason, contact = 200, "OK", nil
    if KSR.pv.get("$rm") == "INVITE" then
        code, reason, contact = 302, "Moved Temporarily", "<sip:x@127.0.0.1>"
    end
    if KSR.tm.t_newtran() < 0 then
        KSR.sl.sl_reply_error()
        return 1
    end
    if contact then
        KSR.hdr.append_to_reply("Contact: " .. contact .. "\r\n")
    end
    KSR.tm.t_reply(code, reason)
    return 1
end
