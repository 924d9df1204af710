#!/usr/bin/python3
"""Interop: PyKMIP's ProxyKmipClient (Debian's python3-pykmip) against kmsd.

Run by test_kms_pykmip_client with: HOST PORT DIR, where DIR holds ca.pem and
two application certificates (client.pem/.key, client2.pem/.key). Exits 0 when
every check passes; prints the first failure otherwise.
"""
import os
import sys
import warnings

warnings.filterwarnings("ignore")

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives import keywrap, padding as sympadding
from kmip import enums
from kmip.core.factories import attributes
from kmip.pie import exceptions, objects
from kmip.pie.client import ProxyKmipClient

host, port, pki = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def client(name, version=enums.KMIPVersion.KMIP_1_2):
    return ProxyKmipClient(hostname=host, port=port, cert=f"{pki}/{name}.pem", key=f"{pki}/{name}.key",
                           ca=f"{pki}/ca.pem", config_file="/dev/null", kmip_version=version)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def refused(fn, reason, what):
    try:
        fn()
    except exceptions.KmipOperationFailure as e:
        check(e.reason == reason, f"{what} (refused: {e.reason}, {e.message})")
        return
    check(False, f"{what}: not refused")


def name_attr(name):
    return attributes.AttributeFactory().create_attribute(enums.AttributeType.NAME, name)


usage = [enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT,
         enums.CryptographicUsageMask.WRAP_KEY, enums.CryptographicUsageMask.UNWRAP_KEY]
name = f"pykmip-interop-{os.getpid()}"

with client("client") as c:
    uid = c.create(enums.CryptographicAlgorithm.AES, 256, name=name, cryptographic_usage_mask=usage)
    check(isinstance(uid, str) and len(uid) == 36, f"create -> {uid}")
    got_uid, attrs = c.get_attributes(uid, ["State", "Cryptographic Algorithm", "Cryptographic Length", "Name"])
    values = {a.attribute_name.value: a.attribute_value for a in attrs}
    check(got_uid == uid, "get attributes names the key")
    check(values["State"].value == enums.State.PRE_ACTIVE, "a new key is Pre-Active")
    check(values["Cryptographic Algorithm"].value == enums.CryptographicAlgorithm.AES, "algorithm AES")
    check(values["Cryptographic Length"].value == 256, "length 256")
    check(values["Name"].name_value.value == name, "name kept")
    names = c.get_attribute_list(uid)
    check("State" in names and "Name" in names and "Initial Date" in names, f"get attribute list: {sorted(names)}")
    check(c.locate(attributes=[name_attr(name)]) == [uid], "locate by name finds exactly the key")

    refused(lambda: c.encrypt(b"x" * 16, uid=uid, cryptographic_parameters={
        "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
        "block_cipher_mode": enums.BlockCipherMode.CBC, "padding_method": enums.PaddingMethod.PKCS5},
        iv_counter_nonce=b"\0" * 16), enums.ResultReason.ILLEGAL_OPERATION, "encrypt with a Pre-Active key")
    c.activate(uid)
    _, attrs = c.get_attributes(uid, ["State", "Activation Date"])
    values = {a.attribute_name.value: a.attribute_value for a in attrs}
    check(values["State"].value == enums.State.ACTIVE and values["Activation Date"].value > 0,
          "activate: Active, with an Activation Date")
    refused(lambda: c.activate(uid), enums.ResultReason.ILLEGAL_OPERATION, "activate an Active key")

    key = c.get(uid)
    check(isinstance(key, objects.SymmetricKey) and len(key.value) == 32, "get returns 32 bytes of AES key")

    cbc = {"cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
           "block_cipher_mode": enums.BlockCipherMode.CBC, "padding_method": enums.PaddingMethod.PKCS5}
    iv = os.urandom(16)
    data = b"a tablespace data key, 32 bytes"
    ct, _ = c.encrypt(data, uid=uid, cryptographic_parameters=cbc, iv_counter_nonce=iv)
    padder = sympadding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(key.value), modes.CBC(iv)).encryptor()
    check(ct == enc.update(padder.update(data) + padder.finalize()) + enc.finalize(),
          "AES-CBC ciphertext is the standard one")
    check(c.decrypt(ct, uid=uid, cryptographic_parameters=cbc, iv_counter_nonce=iv) == data, "AES-CBC decrypt")
    ct2, server_iv = c.encrypt(data, uid=uid, cryptographic_parameters=cbc)
    check(server_iv is not None and len(server_iv) == 16 and
          c.decrypt(ct2, uid=uid, cryptographic_parameters=cbc, iv_counter_nonce=server_iv) == data,
          "AES-CBC with a server-made IV")

    kwp = {"cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
           "block_cipher_mode": enums.BlockCipherMode.AES_KEY_WRAP_PADDING}
    wrapped, _ = c.encrypt(data, uid=uid, cryptographic_parameters=kwp)
    check(wrapped == keywrap.aes_key_wrap_with_padding(key.value, data), "AES-KWP (RFC 5649) is the standard one")
    check(c.decrypt(wrapped, uid=uid, cryptographic_parameters=kwp) == data, "AES-KWP unwrap")
    refused(lambda: c.decrypt(wrapped[:-8] + bytes(8), uid=uid, cryptographic_parameters=kwp),
            enums.ResultReason.CRYPTOGRAPHIC_FAILURE, "AES-KWP unwrap of altered data")

    gcm = {"cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
           "block_cipher_mode": enums.BlockCipherMode.GCM, "tag_length": 16}
    refused(lambda: c.encrypt(data, uid=uid, cryptographic_parameters=gcm, iv_counter_nonce=bytes(12)),
            enums.ResultReason.FEATURE_NOT_SUPPORTED, "AES-GCM in KMIP 1.2 (no tag field before 1.4)")
    refused(lambda: c.create(enums.CryptographicAlgorithm.TRIPLE_DES, 192, name="3des"),
            enums.ResultReason.FEATURE_NOT_SUPPORTED, "create a 3DES key")

    material = os.urandom(16)
    uid2 = c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 128, material, name=name + "-reg"))
    check(c.get(uid2).value == material, "register then get returns the same material")

    c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid, revocation_message="node left")
    _, attrs = c.get_attributes(uid, ["State"])
    check(attrs[0].attribute_value.value == enums.State.DEACTIVATED, "revoke: Deactivated")
    refused(lambda: c.encrypt(data, uid=uid, cryptographic_parameters=cbc, iv_counter_nonce=iv),
            enums.ResultReason.ILLEGAL_OPERATION, "encrypt with a Deactivated key")
    c.destroy(uid)
    refused(lambda: c.get(uid), enums.ResultReason.ITEM_NOT_FOUND, "get a Destroyed key")
    refused(lambda: c.get("no-such-key"), enums.ResultReason.ITEM_NOT_FOUND, "get an unknown key")

with client("client", enums.KMIPVersion.KMIP_1_4) as c:
    uid3 = c.create(enums.CryptographicAlgorithm.AES, 256, name=name + "-gcm", cryptographic_usage_mask=usage)
    c.activate(uid3)
    key3 = c.get(uid3).value
    iv = os.urandom(12)
    ct, _ = c.encrypt(b"sealed", uid=uid3, cryptographic_parameters=gcm, iv_counter_nonce=iv)
    check(ct == AESGCM(key3).encrypt(iv, b"sealed", None)[:-16], "AES-GCM in KMIP 1.4: the standard ciphertext")

with client("client2") as other:
    check(other.locate() == [], "another application's Locate sees none of these keys")
    refused(lambda: other.get(uid2), enums.ResultReason.ITEM_NOT_FOUND, "another application cannot get the key")
    refused(lambda: other.destroy(uid2), enums.ResultReason.ITEM_NOT_FOUND, "another application cannot destroy it")

print("pykmip client interop: all checks passed")
