"""SIP user agent server: message syntax, transports, transactions, dialogs and inbound calls."""

from ivr.sip.call import CallEnded, IncomingCall
from ivr.sip.message import SipParseError
from ivr.sip.server import SipConfig, SipServer
from ivr.sip.transaction import SipTimers

__all__ = ["CallEnded", "IncomingCall", "SipConfig", "SipParseError", "SipServer", "SipTimers"]
