"""The packet core: stateless IP/ICMP translation (RFC 7915, RFC 6052, RFC 7757). No I/O.

from clat_translator.xlat import Translator, XlatConfig
t = Translator(XlatConfig(pool6="64:ff9b::/96", eamt=[("192.0.0.1/32", "fd00:c1a7::1/128")]))
r = t.translate(packet)   # r.out, r.back, r.drop
"""

from .config import RFC1191_PLATEAUS, XlatConfig
from .context import TranslateResult
from .drops import DROP_REASONS
from .translator import Translator

__all__ = ["DROP_REASONS", "RFC1191_PLATEAUS", "TranslateResult", "Translator", "XlatConfig"]
