/*
 * The page cipher, the key header and the temp-file cipher, without SQLite:
 * round trips for both ciphers and every page size, tamper detection (every
 * bit of a page, moved pages, foreign pages, other file kinds), the nonce
 * rule (no repeat across many writes and a crash/restart; the 2^32 budget
 * persisted ahead of use and the automatic key roll, with a small injected
 * limit, through the real key-header code on a real file); a slow key
 * service holds only its own tablespace's opens.
 */
#include "sr_test.h"

#include <openssl/sha.h>
#include "tablespace.h"
#include "tde.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static const sr_tde_cipher_t ciphers[] = {SR_TDE_CIPHER_AES_256_GCM, SR_TDE_CIPHER_CHACHA20_POLY1305};

static sr_tde_space_t *space_with_key(sr_tde_cipher_t cipher, uint32_t version)
{
    sr_uuid_t id;
    sr_uuid_generate(&id);
    sr_tde_space_t *s = NULL;
    uint8_t key[SR_TDE_KEY_BYTES];
    SR_CHECK_OK(sr_random_bytes(key, sizeof key));
    SR_CHECK_OK(sr_tde_space_new(&id, cipher, &s));
    SR_CHECK_OK(sr_tde_space_add_key(s, version, key, 0));
    SR_CHECK_OK(sr_tde_space_set_active(s, version));
    return s;
}

static void fill_page(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n - SR_TDE_PAGE_TRAILER; i++) p[i] = (uint8_t)(i * 31 + seed);
    memset(p + n - SR_TDE_PAGE_TRAILER, 0, SR_TDE_PAGE_TRAILER);
}

static void test_round_trip_every_cipher_and_page_size(void)
{
    for (size_t c = 0; c < 2; c++)
        for (size_t ps = 512; ps <= 65536; ps *= 2) {
            sr_tde_space_t *s = space_with_key(ciphers[c], 1);
            sr_tde_pagectx_t *pc = NULL;
            SR_CHECK_OK(sr_tde_pagectx_new(s, &pc));
            uint8_t *plain = malloc(ps), *page = malloc(ps);
            fill_page(plain, ps, (unsigned)ps);
            SR_CHECK_OK(sr_tde_page_encrypt(pc, &(sr_tde_place_t){.kind = SR_TDE_FILE_DB, .location = 7}, plain, page, ps));
            SR_CHECK(memcmp(plain, page, 64) != 0);
            SR_CHECK(sr_tde_page_key_version(page, ps) == 1);
            SR_CHECK_OK(sr_tde_page_decrypt(pc, &(sr_tde_place_t){.kind = SR_TDE_FILE_DB, .location = 7}, page, ps));
            SR_CHECK_MSG(memcmp(plain, page, ps) == 0, "%s at %zu bytes: round trip differs",
                         sr_tde_cipher_name(ciphers[c]), ps);
            free(plain), free(page);
            sr_tde_pagectx_free(pc);
            sr_tde_space_free(s);
        }
}

static void test_every_flipped_bit_is_detected(void)
{
    const size_t ps = 1024;
    for (size_t c = 0; c < 2; c++) {
        sr_tde_space_t *s = space_with_key(ciphers[c], 1);
        sr_tde_pagectx_t *pc = NULL;
        SR_CHECK_OK(sr_tde_pagectx_new(s, &pc));
        uint8_t plain[1024], enc[1024], page[1024];
        fill_page(plain, ps, 3);
        SR_CHECK_OK(sr_tde_page_encrypt(pc, &(sr_tde_place_t){.kind = SR_TDE_FILE_WAL, .location = 3}, plain, enc, ps));
        int undetected = 0;
        for (size_t bit = 0; bit < ps * 8; bit++) {
            memcpy(page, enc, ps);
            page[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            sr_err_t rc = sr_tde_page_decrypt(pc, &(sr_tde_place_t){.kind = SR_TDE_FILE_WAL, .location = 3}, page, ps);
            if (rc == SR_OK) undetected++;
            else {
                /* nothing of the failed page is handed back */
                int leaked = 0;
                for (size_t i = 0; i < ps - SR_TDE_PAGE_TRAILER; i++) leaked |= page[i] == plain[i] && plain[i];
                if (leaked && bit < 64) SR_CHECK_MSG(0, "failed page still holds plaintext (bit %zu)", bit);
            }
        }
        SR_CHECK_EQ_INT(undetected, 0);
        sr_tde_pagectx_free(pc);
        sr_tde_space_free(s);
    }
}

static void test_aad_binds_place_kind_and_tablespace(void)
{
    const size_t ps = 4096;
    sr_tde_space_t *a = space_with_key(SR_TDE_CIPHER_AES_256_GCM, 1), *b = space_with_key(SR_TDE_CIPHER_AES_256_GCM, 1);
    sr_tde_pagectx_t *pa = NULL, *pb = NULL;
    SR_CHECK_OK(sr_tde_pagectx_new(a, &pa));
    SR_CHECK_OK(sr_tde_pagectx_new(b, &pb));
    uint8_t plain[4096], enc[4096], page[4096];
    fill_page(plain, ps, 9);
    SR_CHECK_OK(sr_tde_page_encrypt(pa, &(sr_tde_place_t){.kind = SR_TDE_FILE_DB, .location = 5}, plain, enc, ps));
    memcpy(page, enc, ps);
    SR_CHECK_ERR(sr_tde_page_decrypt(pa, &(sr_tde_place_t){.kind = SR_TDE_FILE_DB, .location = 6}, page, ps), SR_ERR_TDE_PAGE_AUTH); /* moved */
    SR_CHECK(strstr(sr_err_detail(), "database page 6") != NULL);
    SR_CHECK(strstr(sr_err_detail(), "tag mismatch") != NULL);
    memcpy(page, enc, ps);
    SR_CHECK_ERR(sr_tde_page_decrypt(pa, &(sr_tde_place_t){.kind = SR_TDE_FILE_JOURNAL, .location = 5}, page, ps), SR_ERR_TDE_PAGE_AUTH); /* other kind */
    memcpy(page, enc, ps);
    SR_CHECK_ERR(sr_tde_page_decrypt(pb, &(sr_tde_place_t){.kind = SR_TDE_FILE_DB, .location = 5}, page, ps), SR_ERR_TDE_PAGE_AUTH); /* other tablespace */
    memset(page, 0, ps);
    SR_CHECK_ERR(sr_tde_page_decrypt(pa, &(sr_tde_place_t){.kind = SR_TDE_FILE_DB, .location = 5}, page, ps), SR_ERR_TDE_PAGE_AUTH);
    SR_CHECK(strstr(sr_err_detail(), "all zeros") != NULL);
    memcpy(page, enc, ps);
    page[ps - 20] = 9; /* key version 9..., unknown */
    SR_CHECK_ERR(sr_tde_page_decrypt(pa, &(sr_tde_place_t){.kind = SR_TDE_FILE_DB, .location = 5}, page, ps), SR_ERR_TDE_PAGE_AUTH);
    SR_CHECK(strstr(sr_err_detail(), "unknown key version") != NULL);
    memcpy(page, enc, ps);
    SR_CHECK_OK(sr_tde_page_decrypt(pa, &(sr_tde_place_t){.kind = SR_TDE_FILE_DB, .location = 5}, page, ps));
    sr_tde_pagectx_free(pa), sr_tde_pagectx_free(pb);
    sr_tde_space_free(a), sr_tde_space_free(b);
}

static int cmp_nonce(const void *x, const void *y) { return memcmp(x, y, SR_TDE_NONCE_BYTES); }

/* Persistence stand-in for the key header: a mark that survives the "crash". */
static uint64_t persisted_mark;
static sr_err_t reserve_in_memory(void *ctx, uint32_t version, uint64_t block, uint64_t limit, uint64_t *start)
{
    (void)ctx, (void)version;
    *start = persisted_mark;
    if (persisted_mark < limit) persisted_mark = persisted_mark + block < limit ? persisted_mark + block : limit;
    return SR_OK;
}

static void test_nonces_never_repeat_across_restart(void)
{
    enum { PER_RUN = 100000 };
    const size_t ps = 512;
    uint8_t *nonces = malloc(2 * PER_RUN * SR_TDE_NONCE_BYTES), key[32], plain[512], page[512];
    SR_CHECK_OK(sr_random_bytes(key, sizeof key));
    sr_uuid_t id;
    sr_uuid_generate(&id);
    fill_page(plain, ps, 1);
    persisted_mark = 0;
    uint64_t used_before_crash = 0;
    for (int run = 0; run < 2; run++) {
        sr_tde_space_t *s = NULL;
        sr_tde_pagectx_t *pc = NULL;
        SR_CHECK_OK(sr_tde_space_new(&id, SR_TDE_CIPHER_AES_256_GCM, &s));
        SR_CHECK_OK(sr_tde_space_add_key(s, 1, key, persisted_mark)); /* the restart reads the header's mark */
        SR_CHECK_OK(sr_tde_space_set_active(s, 1));
        sr_tde_space_set_hooks(s, &(sr_tde_space_hooks_t){.reserve = reserve_in_memory});
        sr_tde_space_set_limits(s, 0, 4096);
        SR_CHECK_OK(sr_tde_pagectx_new(s, &pc));
        for (int i = 0; i < PER_RUN; i++) {
            SR_CHECK_OK(sr_tde_page_encrypt(pc, &(sr_tde_place_t){.kind = SR_TDE_FILE_DB, .location = (uint64_t)i}, plain, page, ps));
            memcpy(nonces + ((size_t)run * PER_RUN + i) * SR_TDE_NONCE_BYTES, page + ps - SR_TDE_PAGE_TRAILER,
                   SR_TDE_NONCE_BYTES);
        }
        uint64_t counted = sr_tde_space_encryptions(s, 1);
        if (run == 0) used_before_crash = counted;
        else SR_CHECK_MSG(counted >= used_before_crash + PER_RUN, "count went backwards after restart: %llu",
                          (unsigned long long)counted);
        SR_CHECK(persisted_mark >= counted); /* reserved ahead of use */
        sr_tde_pagectx_free(pc);
        sr_tde_space_free(s); /* "crash": nothing written back */
    }
    qsort(nonces, 2 * PER_RUN, SR_TDE_NONCE_BYTES, cmp_nonce);
    int repeats = 0;
    for (size_t i = 1; i < 2 * PER_RUN; i++)
        repeats += memcmp(nonces + (i - 1) * SR_TDE_NONCE_BYTES, nonces + i * SR_TDE_NONCE_BYTES, SR_TDE_NONCE_BYTES) == 0;
    SR_CHECK_EQ_INT(repeats, 0);
    free(nonces);
}

/* The real tablespace code on a real file: reservations persisted in the key
 * header, the key rolled at an injected limit, and a reopen that continues. */
static void test_budget_persisted_and_key_rolled_in_header(void)
{
    const char *kpath = sr_test_path("roll.key"), *db = sr_test_path("roll.db");
    SR_CHECK_OK(sr_keyfile_create(kpath));
    sr_keyprov_t *kp = NULL;
    SR_CHECK_OK(sr_keyprov_keyfile_open(kpath, &kp));
    FILE *f = fopen(db, "w");
    SR_CHECK(f != NULL);
    fclose(f);
    sr_tde_ts_t *ts = NULL;
    sr_tde_ts_options_t opts = {.may_create = 1};
    SR_CHECK_OK(sr_tde_ts_open(db, kp, &opts, &ts));
    sr_tde_space_t *s = sr_tde_ts_space(ts);
    sr_tde_space_set_limits(s, 1000, 300);
    sr_tde_pagectx_t *pc = NULL;
    SR_CHECK_OK(sr_tde_pagectx_new(s, &pc));
    uint8_t plain[512], page[512];
    fill_page(plain, 512, 4);
    uint32_t seen[4] = {0};
    for (int i = 0; i < 2500; i++) {
        SR_CHECK_OK(sr_tde_page_encrypt(pc, &(sr_tde_place_t){.kind = SR_TDE_FILE_DB, .location = 1}, plain, page, 512));
        uint32_t v = sr_tde_page_key_version(page, 512);
        if (v >= 1 && v <= 3) seen[v]++;
        if (i % 97 == 0) SR_CHECK_OK(sr_tde_page_decrypt(pc, &(sr_tde_place_t){.kind = SR_TDE_FILE_DB, .location = 1}, page, 512));
    }
    SR_CHECK_MSG(seen[1] <= 1000 && seen[2] <= 1000 && seen[1] + seen[2] + seen[3] == 2500,
                 "per-version counts %u %u %u", seen[1], seen[2], seen[3]);
    SR_CHECK(sr_tde_space_active(s) == 3);
    sr_tde_header_t h;
    SR_CHECK_OK(sr_tde_file_header_read(db, kp, &h, NULL));
    SR_CHECK(h.n_keys == 3 && h.active_version == 3);
    SR_CHECK(h.keys[0].encryptions_reserved == 1000 && h.keys[1].encryptions_reserved == 1000);
    SR_CHECK(h.keys[2].encryptions_reserved >= seen[3]);
    sr_tde_pagectx_free(pc);
    sr_tde_ts_release(ts);
    /* closing gave the unused rest back: the mark is exactly what was used */
    SR_CHECK_OK(sr_tde_file_header_read(db, kp, &h, NULL));
    SR_CHECK_MSG(h.keys[2].encryptions_reserved == seen[3], "mark %llu, used %u",
                 (unsigned long long)h.keys[2].encryptions_reserved, seen[3]);

    /* reopen: every key unwraps, the count resumes at the persisted mark */
    SR_CHECK_OK(sr_tde_ts_open(db, kp, NULL, &ts));
    SR_CHECK(sr_tde_space_active(sr_tde_ts_space(ts)) == 3);
    SR_CHECK(sr_tde_space_encryptions(sr_tde_ts_space(ts), 3) == h.keys[2].encryptions_reserved);
    sr_tde_ts_release(ts);
    sr_keyprov_free(kp);
}

static sr_err_t auth_with(void *key, const sr_tde_header_t *h) { return sr_tde_header_verify(h, key); }

static void test_header_round_trip_and_damage(void)
{
    uint8_t hkey[SR_TDE_HEADER_KEY_BYTES] = {42}, other[SR_TDE_HEADER_KEY_BYTES] = {43};
    sr_tde_header_t h = {.format_version = 2, .generation = 5, .cipher = SR_TDE_CIPHER_CHACHA20_POLY1305,
                         .page_size = 8192, .state = SR_TDE_STATE_ENCRYPTED, .active_version = 2, .n_keys = 2,
                         .created_us = 1, .updated_us = 2};
    sr_uuid_generate(&h.tablespace);
    uint8_t kek[32] = {7}, dek[32] = {8};
    for (uint32_t i = 0; i < 2; i++) {
        h.keys[i].version = i + 1;
        h.keys[i].encryptions_reserved = 1000 * (i + 1);
        SR_CHECK_OK(sr_keymgr_wrap(SR_WRAP_AES_256_GCM, kek, 32, &h.tablespace, 1, NULL, 0, dek, 32, &h.keys[i].wrapped));
    }
    uint8_t region[SR_TDE_HEADER_REGION] = {0};
    SR_CHECK_OK(sr_tde_header_encode(&h, hkey, region));
    sr_tde_header_t back;
    int slot = -1;
    SR_CHECK_OK(sr_tde_header_pick(region, auth_with, hkey, &back, &slot));
    SR_CHECK(slot == 0 && back.generation == 5 && back.page_size == 8192 && back.n_keys == 2 &&
             back.keys[1].encryptions_reserved == 2000 && sr_uuid_equal(&back.tablespace, &h.tablespace) &&
             back.keys[1].wrapped.blob_len == h.keys[1].wrapped.blob_len);
    /* newer generation in slot 1 wins; a torn slot 1 falls back to slot 0 */
    h.generation = 6;
    SR_CHECK_OK(sr_tde_header_encode(&h, hkey, region + SR_TDE_HEADER_SLOT));
    SR_CHECK_OK(sr_tde_header_pick(region, auth_with, hkey, &back, &slot));
    SR_CHECK(slot == 1 && back.generation == 6);
    region[SR_TDE_HEADER_SLOT + 100] ^= 1;
    SR_CHECK_OK(sr_tde_header_pick(region, auth_with, hkey, &back, &slot));
    SR_CHECK(slot == 0 && back.generation == 5);
    region[100] ^= 1;
    SR_CHECK_ERR(sr_tde_header_pick(region, auth_with, hkey, &back, &slot), SR_ERR_CORRUPT);
    SR_CHECK(strstr(sr_err_detail(), "checksum") != NULL);
    /* an edit whose checksum is recomputed (no key needed for that) fails the MAC:
     * the active version set back, a generation of 2^64-1 */
    SR_CHECK_OK(sr_tde_header_encode(&h, hkey, region));
    SR_CHECK_OK(sr_tde_header_encode(&h, hkey, region + SR_TDE_HEADER_SLOT));
    region[SR_TDE_HEADER_SLOT + 51] = 1;             /* active version 2 -> 1 */
    memset(region + SR_TDE_HEADER_SLOT + 10, 0xff, 8); /* generation 2^64-1 */
    SHA256(region + SR_TDE_HEADER_SLOT, 2352, region + SR_TDE_HEADER_SLOT + 2352);
    SR_CHECK_OK(sr_tde_header_pick(region, NULL, NULL, &back, &slot)); /* unauthenticated: takes it */
    SR_CHECK(slot == 1 && back.active_version == 1);
    SR_CHECK_ERR(sr_tde_header_pick(region, auth_with, hkey, &back, &slot), SR_ERR_CORRUPT);
    SR_CHECK(strstr(sr_err_detail(), "slot 1") && strstr(sr_err_detail(), "MAC"));
    /* another tablespace's header key does not verify an intact header either */
    SR_CHECK_OK(sr_tde_header_encode(&h, hkey, region + SR_TDE_HEADER_SLOT));
    SR_CHECK_ERR(sr_tde_header_pick(region, auth_with, other, &back, &slot), SR_ERR_CORRUPT);
    /* a cipher switch under way: one version under AES-256-GCM, the header (and the newer one) ChaCha: format 3,
     * each key's cipher back as written; a format 3 that names no other cipher is refused */
    h.keys[0].cipher = SR_TDE_CIPHER_AES_256_GCM;
    SR_CHECK_OK(sr_tde_header_encode(&h, hkey, region));
    SR_CHECK_EQ_INT(region[9], SR_TDE_HEADER_FORMAT_MIXED);
    SR_CHECK_OK(sr_tde_header_decode(region, SR_TDE_HEADER_SLOT, &back));
    SR_CHECK(back.keys[0].cipher == SR_TDE_CIPHER_AES_256_GCM && back.keys[1].cipher == SR_TDE_CIPHER_CHACHA20_POLY1305);
    SR_CHECK_OK(sr_tde_header_verify(&back, hkey));
    h.keys[0].cipher = 0;
    SR_CHECK_OK(sr_tde_header_encode(&h, hkey, region));
    SR_CHECK_EQ_INT(region[9], SR_TDE_HEADER_FORMAT);
    region[9] = SR_TDE_HEADER_FORMAT_MIXED;
    SHA256(region, 2352, region + 2352);
    SR_CHECK_ERR(sr_tde_header_decode(region, SR_TDE_HEADER_SLOT, &back), SR_ERR_CORRUPT);
    /* an unknown format version names both versions; format 1 says what to do */
    SR_CHECK_OK(sr_tde_header_encode(&h, hkey, region));
    region[9] = 7;
    SR_CHECK_ERR(sr_tde_header_decode(region, SR_TDE_HEADER_SLOT, &back), SR_ERR_VERSION);
    SR_CHECK(strstr(sr_err_detail(), "format 7") != NULL && strstr(sr_err_detail(), "format 2") != NULL);
    region[9] = 1;
    SR_CHECK_ERR(sr_tde_header_decode(region, SR_TDE_HEADER_SLOT, &back), SR_ERR_VERSION);
    SR_CHECK(strstr(sr_err_detail(), "decrypt the file with that build") != NULL);
    memset(region, 0, sizeof region);
    SR_CHECK_ERR(sr_tde_header_pick(region, auth_with, hkey, &back, &slot), SR_ERR_TDE_NO_HEADER);
}

static void test_xts_temp_cipher(void)
{
    sr_tde_xts_t *x = NULL, *y = NULL;
    SR_CHECK_OK(sr_tde_xts_new(&x));
    SR_CHECK_OK(sr_tde_xts_new(&y));
    uint8_t plain[4096], enc[4096], back[4096], other[4096];
    for (size_t i = 0; i < sizeof plain; i++) plain[i] = (uint8_t)i;
    for (size_t len = 16; len <= 4096; len = len * 2 + 1) {
        SR_CHECK_OK(sr_tde_xts_encrypt(x, 3, plain, enc, len));
        SR_CHECK(memcmp(enc, plain, len) != 0);
        SR_CHECK_OK(sr_tde_xts_decrypt(x, 3, enc, back, len));
        SR_CHECK(memcmp(back, plain, len) == 0);
    }
    SR_CHECK_OK(sr_tde_xts_encrypt(x, 4, plain, other, 4096));
    SR_CHECK(memcmp(other, enc, 64) != 0); /* the tweak matters */
    SR_CHECK_OK(sr_tde_xts_encrypt(y, 3, plain, other, 4096));
    SR_CHECK(memcmp(other, enc, 64) != 0); /* each file has its own key */
    SR_CHECK_ERR(sr_tde_xts_encrypt(x, 3, plain, enc, 15), SR_ERR_INVALID_ARG);
    SR_CHECK_OK(sr_tde_xts_tail(x, 9, plain + 1, enc, 7));
    SR_CHECK_OK(sr_tde_xts_tail(x, 9, enc, back, 7));
    SR_CHECK(memcmp(back, plain + 1, 7) == 0 && memcmp(enc, plain + 1, 7) != 0);
    sr_tde_xts_free(x), sr_tde_xts_free(y);
}

/* A key service that answers after SLOW_MS (a KMS far away, or down and
 * timing out), in front of a key file. */
#define SLOW_MS 1000
static sr_err_t slow_unwrap(void *impl, const sr_uuid_t *ts, uint32_t version, const sr_wrapped_key_t *w, uint8_t *dek)
{
    usleep(SLOW_MS * 1000);
    return sr_keyprov_dek_unwrap(impl, ts, version, w, dek);
}
static sr_err_t slow_create(void *impl, const sr_uuid_t *ts, uint32_t version, uint8_t *dek, sr_wrapped_key_t *w)
{
    return sr_keyprov_dek_create(impl, ts, version, dek, w);
}
static void slow_destroy(void *impl) { sr_keyprov_free(impl); }
static const sr_keyprov_ops_t slow_ops = {.kind = "slow", .dek_create = slow_create, .dek_unwrap = slow_unwrap,
                                          .destroy = slow_destroy};

typedef struct opener {
    const char *db;
    sr_keyprov_t *kp;
    sr_err_t rc;
    sr_tde_ts_t *ts;
} opener_t;

static void *open_in_thread(void *arg)
{
    opener_t *o = arg;
    o->rc = sr_tde_ts_open(o->db, o->kp, NULL, &o->ts);
    return NULL;
}

static void make_tablespace(const char *db, sr_keyprov_t *kp)
{
    FILE *f = fopen(db, "w");
    SR_CHECK(f != NULL);
    fclose(f);
    sr_tde_ts_t *ts = NULL;
    SR_CHECK_OK(sr_tde_ts_open(db, kp, &(sr_tde_ts_options_t){.may_create = 1}, &ts));
    sr_tde_ts_release(ts);
}

/* A tablespace whose key service is slow holds its own opens, not those of
 * the process's other tablespaces (the registry was locked over the key
 * service's round trip: every open in the process waited for the slowest
 * KMS answer, and for a KMS that was down, its timeout). Two threads opening
 * the slow one both get it. */
static void test_a_slow_key_service_holds_only_its_tablespace(void)
{
    const char *kpath = sr_test_path("slow.key"), *slow_db = sr_test_path("slow.db"), *fast_db = sr_test_path("fast.db");
    SR_CHECK_OK(sr_keyfile_create(kpath));
    sr_keyprov_t *kp = NULL, *inner = NULL, *slow = NULL;
    SR_CHECK_OK(sr_keyprov_keyfile_open(kpath, &kp));
    SR_CHECK_OK(sr_keyprov_keyfile_open(kpath, &inner));
    SR_CHECK_OK(sr_keyprov_new(&slow_ops, inner, "slow", &slow));
    make_tablespace(slow_db, kp);
    make_tablespace(fast_db, kp);
    opener_t a = {.db = slow_db, .kp = slow}, b = {.db = slow_db, .kp = slow};
    pthread_t ta, tb;
    uint64_t t0 = sr_time_mono_ms();
    SR_CHECK(pthread_create(&ta, NULL, open_in_thread, &a) == 0);
    SR_CHECK(pthread_create(&tb, NULL, open_in_thread, &b) == 0);
    usleep(100000); /* both are in the slow open */
    sr_tde_ts_t *fast = NULL;
    uint64_t t1 = sr_time_mono_ms();
    SR_CHECK_OK(sr_tde_ts_open(fast_db, kp, NULL, &fast));
    uint64_t took = sr_time_mono_ms() - t1;
    SR_CHECK_MSG(took < SLOW_MS / 2, "the other tablespace's open took %llu ms", (unsigned long long)took);
    pthread_join(ta, NULL), pthread_join(tb, NULL);
    SR_CHECK_OK(a.rc);
    SR_CHECK_OK(b.rc);
    SR_CHECK(a.ts == b.ts); /* one entry, two references */
    SR_CHECK(sr_time_mono_ms() - t0 >= 2 * SLOW_MS); /* each open proved its caller's key */
    sr_tde_ts_release(a.ts), sr_tde_ts_release(b.ts), sr_tde_ts_release(fast);
    /* a failed open leaves nothing behind: the next one, with a good key, works */
    const char *other = sr_test_path("other.key");
    sr_keyprov_t *wrong = NULL;
    SR_CHECK_OK(sr_keyfile_create(other));
    SR_CHECK_OK(sr_keyprov_keyfile_open(other, &wrong));
    sr_tde_ts_t *ts = NULL;
    SR_CHECK(sr_tde_ts_open(fast_db, wrong, NULL, &ts) != SR_OK);
    SR_CHECK_OK(sr_tde_ts_open(fast_db, kp, NULL, &ts));
    sr_tde_ts_release(ts);
    sr_keyprov_free(wrong), sr_keyprov_free(slow), sr_keyprov_free(kp);
}

int main(void)
{
    SR_RUN(test_round_trip_every_cipher_and_page_size);
    SR_RUN(test_every_flipped_bit_is_detected);
    SR_RUN(test_aad_binds_place_kind_and_tablespace);
    SR_RUN(test_nonces_never_repeat_across_restart);
    SR_RUN(test_budget_persisted_and_key_rolled_in_header);
    SR_RUN(test_header_round_trip_and_damage);
    SR_RUN(test_xts_temp_cipher);
    SR_RUN(test_a_slow_key_service_holds_only_its_tablespace);
    return sr_test_finish();
}
