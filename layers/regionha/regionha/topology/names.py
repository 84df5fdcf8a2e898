"""DNS names in Route 53's canonical form, so that names are stored and compared one way everywhere.

Route 53 stores letters as lower case whatever case they were given in, treats a name with or without
the trailing dot as the same fully qualified name, and returns special characters as three-digit
*octal* escapes (a wildcard ``*.example.com.`` is listed as ``\\052.example.com.``).

AWS doc followed: Route 53 Developer Guide, "DNS domain name format" (DomainNameFormat.html);
RFC 4343 (DNS case insensitivity).
"""

from __future__ import annotations

import re

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
# Route 53 folds only ASCII letters (str.lower() would also fold other scripts).
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _decode(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 8))
    # A dot or backslash inside a label, a space or an unprintable octet stays escaped: decoding it
    # would change where the labels split, or make a name that cannot be written back.
    if char in ".\\ " or not (char.isascii() and char.isprintable()):
        return match.group(0)
    return char


def canonical_name(text: str) -> str:
    """``text`` (a zone or record name as a user wrote it or as Route 53 returned it) in canonical
    form: surrounding whitespace dropped, octal escapes of printable characters decoded, ASCII letters
    lower case, one trailing dot.

    ``canonical_name("Sample.Cluster.Local") == "sample.cluster.local."``;
    ``canonical_name("\\\\052.cluster.local.") == "*.cluster.local."``. Pure; never raises (an invalid
    name stays invalid and is reported by validation).
    """
    # Surrounding whitespace (a quoted YAML value, a pasted name) is never part of a DNS name.
    name = _OCTAL_ESCAPE.sub(_decode, text.strip()).translate(_ASCII_LOWER)
    return name if name.endswith(".") else name + "."


def same_name(a: str, b: str) -> bool:
    """Whether two names, in any spelling Route 53 or a user may give, are the same DNS name."""
    return canonical_name(a) == canonical_name(b)
