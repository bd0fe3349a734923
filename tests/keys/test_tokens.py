import hashlib
import hmac

from apps.keys import tokens

MUTATION_ALPHABET = tokens.BASE62 + "_-.~ +/=!"


def single_character_mutations(token: str):
    """Every substitution, deletion and insertion of one character."""
    for i, original in enumerate(token):
        for char in MUTATION_ALPHABET:
            if char != original:
                yield token[:i] + char + token[i + 1:]
        yield token[:i] + token[i + 1:]
    for i in range(len(token) + 1):
        for char in tokens.BASE62[::7]:
            yield token[:i] + char + token[i:]


def test_generated_token_has_the_documented_shape_and_parses_back():
    key_id, secret, token = tokens.generate()
    assert token.startswith("mmk_") and len(token) == 4 + 12 + 1 + 32 + 6
    assert tokens.parse(token) == tokens.ParsedToken(key_id=key_id, secret=secret)


def test_every_single_character_mutation_is_rejected_by_the_parser():
    _, _, token = tokens.generate()
    mutations = list(single_character_mutations(token))
    assert len(mutations) > 3000
    accepted = [m for m in mutations if tokens.parse(m) is not None]
    assert accepted == []


def test_digest_is_hmac_sha256_of_key_id_and_secret_under_the_pepper():
    expected = hmac.new(b"pepper", b"abc.def", hashlib.sha256).hexdigest()
    assert tokens.digest("abc", "def", "pepper") == expected
    assert tokens.digest("abc", "def", "other-pepper") != expected
