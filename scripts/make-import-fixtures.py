"""Writes the import fixtures (see scripts/make-import-fixtures).

passwords.json maps each login that must sign in to its password; every
other record is there to be skipped or to stay unable to sign in.
"""
import base64
import csv
import datetime
import hashlib
import json
import os
import sys

import argon2.low_level
import bcrypt
import django
from django.conf import settings

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
db = os.path.join(out, "django.sqlite3")
if os.path.exists(db):
    os.remove(db)
settings.configure(
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db}},
    USE_TZ=True,
    PASSWORD_HASHERS=[
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
        "django.contrib.auth.hashers.Argon2PasswordHasher",
        "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
        "django.contrib.auth.hashers.BCryptPasswordHasher",
        "django.contrib.auth.hashers.ScryptPasswordHasher",
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "fixture_hashers.LegacyPBKDF2SHA1",
        "fixture_hashers.Django31PBKDF2",
    ],
)
# Hashes as older Django releases left them in databases (their default
# iterations then); authql re-hashes them at the next sign-in as Django would.
import types  # noqa: E402

from django.contrib.auth import hashers  # noqa: E402

legacy = types.ModuleType("fixture_hashers")
legacy.LegacyPBKDF2SHA1 = type("LegacyPBKDF2SHA1", (hashers.PBKDF2SHA1PasswordHasher,),
                               {"iterations": 10000, "algorithm": "pbkdf2_sha1", "__module__": "fixture_hashers"})
legacy.Django31PBKDF2 = type("Django31PBKDF2", (hashers.PBKDF2PasswordHasher,),
                             {"iterations": 260000, "algorithm": "pbkdf2_sha256", "__module__": "fixture_hashers"})
sys.modules["fixture_hashers"] = legacy
django.setup()
from django.contrib.auth.hashers import make_password  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0)
passwords = {}


def user(username, password, hasher, **fields):
    u = User(username=username, **fields)
    if password is None:
        u.set_unusable_password()
    else:
        u.password = make_password(password, hasher=hasher)
    u.save()
    return u


for i, hasher in enumerate(["pbkdf2_sha256", "pbkdf2_sha1", "argon2", "bcrypt_sha256", "bcrypt", "scrypt"]):
    name = f"dj_{hasher}"
    if hasher == "pbkdf2_sha1":
        hasher = legacy.LegacyPBKDF2SHA1()
    elif hasher == "pbkdf2_sha256":
        hasher = hashers.PBKDF2PasswordHasher()  # Django 5.2's own: 1,000,000 iterations
    pw = f"Django {hasher} pass {i}!"
    user(name, pw, hasher, email=f"{name}@example.com", first_name="Dj", last_name=hasher)
    passwords[name] = pw
# Signs in by e-mail too; a Unicode name.
user("Иван", "Пароль для Ивана 42", legacy.Django31PBKDF2(), email="ivan@example.ru", first_name="Иван")
passwords["ivan@example.ru"] = "Пароль для Ивана 42"
# Kept, never able to sign in.
user("dj_unusable", None, None, email="unusable@example.com")
user("dj_inactive", "Inactive user pass 1", "pbkdf2_sha256", is_active=False)
# Skipped, each with its reason.
user("dj_md5", "md5 password", "md5")  # unsupported_hash
user("dj_dup_email", "Dup email pass 1", "pbkdf2_sha256", email="DJ_PBKDF2_SHA256@example.com")  # email_taken
user("DJ_PBKDF2_SHA256", "Dup name pass 1", "pbkdf2_sha256")  # username_taken (case folding)
user("dj_bad_email", "Bad email pass 1", "pbkdf2_sha256", email="nobody@localhost")  # invalid_email
with open(os.path.join(out, "django.json"), "w") as f:
    call_command("dumpdata", "auth.user", "auth.group", indent=2, stdout=f)
with open(os.path.join(out, "django.jsonl"), "w") as f:
    call_command("dumpdata", "auth.user", format="jsonl", stdout=f)
os.remove(db)

# Supabase: auth.users rows as `COPY ... CSV HEADER` writes them. GoTrue
# writes bcrypt as $2a$ (the same algorithm as Python's $2b$).
def go_bcrypt(pw, cost=10):
    return bcrypt.hashpw(pw.encode(), bcrypt.gensalt(cost)).decode().replace("$2b$", "$2a$", 1)


ts = "2024-05-06 07:08:09.123456+00"
rows = [
    dict(id="00000000-0000-0000-0000-000000000001", email="sb_user@example.com",
         encrypted_password=go_bcrypt("Supabase pass one"), phone="447911123456",
         email_confirmed_at=ts, raw_user_meta_data=json.dumps({"first_name": "Sam", "last_name": "Base"})),
    dict(id="00000000-0000-0000-0000-000000000002", email="sb_named@example.com",
         encrypted_password=go_bcrypt("Supabase pass two"),
         raw_user_meta_data=json.dumps({"username": "sb_named", "full_name": "Named One"})),
    dict(id="00000000-0000-0000-0000-000000000003", email="sb_magic@example.com", encrypted_password=""),
    dict(id="00000000-0000-0000-0000-000000000004", email="sb_banned@example.com",
         encrypted_password=go_bcrypt("Supabase banned pass"), banned_until="2999-01-01 00:00:00+00"),
    dict(id="00000000-0000-0000-0000-000000000005", email="not an address",
         encrypted_password=go_bcrypt("Supabase bad email")),
]
passwords["sb_user@example.com"] = "Supabase pass one"
passwords["sb_named"] = "Supabase pass two"
columns = ["instance_id", "id", "aud", "role", "email", "encrypted_password", "email_confirmed_at",
           "created_at", "updated_at", "phone", "banned_until", "deleted_at", "raw_user_meta_data",
           "is_sso_user"]
with open(os.path.join(out, "supabase.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, columns)
    w.writeheader()
    for r in rows:
        w.writerow({"instance_id": "00000000-0000-0000-0000-000000000000", "aud": "authenticated",
                    "role": "authenticated", "created_at": ts, "updated_at": ts, "is_sso_user": "f",
                    "raw_user_meta_data": "{}", **r})

# Keycloak: a realm export (`kc.sh export --realm x`), users with password
# credentials whose secretData/credentialData are JSON inside strings.
def kc_pbkdf2(pw, algorithm, iterations):
    digest, size = {"pbkdf2-sha256": ("sha256", 32), "pbkdf2-sha512": ("sha512", 64), "pbkdf2": ("sha1", 20)}[algorithm]
    salt = os.urandom(16)
    value = hashlib.pbkdf2_hmac(digest, pw.encode(), salt, iterations, size)
    return salt, value, {}


def kc_argon2(pw, iterations):
    salt = os.urandom(16)
    value = argon2.low_level.hash_secret_raw(pw.encode(), salt, time_cost=iterations, memory_cost=7168,
                                             parallelism=1, hash_len=32, type=argon2.low_level.Type.ID)
    params = {"hashLength": ["32"], "memory": ["7168"], "type": ["id"], "version": ["1.3"], "parallelism": ["1"]}
    return salt, value, params


def kc_user(username, email, pw, algorithm, iterations, **extra):
    creds = []
    if pw is not None:
        salt, value, params = (kc_argon2(pw, iterations) if algorithm == "argon2"
                               else kc_pbkdf2(pw, algorithm, iterations))
        creds.append({
            "id": "c-" + username, "type": "password", "userLabel": "My password", "createdDate": 1714980000000,
            "secretData": json.dumps({"value": base64.b64encode(value).decode(),
                                      "salt": base64.b64encode(salt).decode(), "additionalParameters": {}}),
            "credentialData": json.dumps({"hashIterations": iterations, "algorithm": algorithm,
                                          "additionalParameters": params}),
        })
    return {"id": "u-" + username, "createdTimestamp": 1714980000000, "username": username, "enabled": True,
            "totp": False, "emailVerified": True, "firstName": "Kay", "lastName": "Cloak", "email": email,
            "attributes": {"phone": ["+4930123456"]}, "credentials": creds, "disableableCredentialTypes": [],
            "requiredActions": [], "realmRoles": ["default-roles-x"], "notBefore": 0, "groups": [], **extra}


users = [
    kc_user("kc_sha256", "kc_sha256@example.com", "Keycloak sha256 pass", "pbkdf2-sha256", 27500),
    kc_user("kc_sha512", "kc_sha512@example.com", "Keycloak sha512 pass", "pbkdf2-sha512", 210000),
    kc_user("kc_sha1", None, "Keycloak sha1 pass", "pbkdf2", 20000),
    kc_user("kc_argon2", "kc_argon2@example.com", "Keycloak argon2 pass", "argon2", 5),
    kc_user("kc_federated", "kc_fed@example.com", None, None, 0, federationLink="ldap-1"),
    kc_user("kc_disabled", "kc_disabled@example.com", "Keycloak disabled pass", "pbkdf2-sha256", 27500, enabled=False),
    kc_user("kc_weird hash", None, "x", "pbkdf2-sha256", 27500),
]
users[-1]["credentials"][0]["credentialData"] = json.dumps({"hashIterations": 1, "algorithm": "md5"})
users[-1]["username"] = "kc_weird"
for name in ["kc_sha256", "kc_sha512", "kc_sha1", "kc_argon2"]:
    passwords[name] = next(u for u in [
        ("kc_sha256", "Keycloak sha256 pass"), ("kc_sha512", "Keycloak sha512 pass"),
        ("kc_sha1", "Keycloak sha1 pass"), ("kc_argon2", "Keycloak argon2 pass")] if u[0] == name)[1]
realm = {"id": "x", "realm": "x", "enabled": True, "roles": {"realm": [{"id": "r1", "name": "default-roles-x"}]},
         "users": users, "clients": [{"clientId": "account", "redirectUris": ["/realms/x/account/*"]}]}
with open(os.path.join(out, "keycloak-realm.json"), "w") as f:
    json.dump(realm, f, indent=2, ensure_ascii=False)

with open(os.path.join(out, "passwords.json"), "w") as f:
    json.dump(passwords, f, indent=2, ensure_ascii=False, sort_keys=True)
print("fixtures written to", out, file=sys.stderr)
