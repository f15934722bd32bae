-- Concurrent appends share one transaction (write combining).
--
-- Each append used to be a transaction of its own: a PL/pgSQL call, a commit, a WAL flush wait
-- and a round trip, for one or two rows. The store now gathers the appends that arrive while
-- earlier ones are being written and sends them as one call of `atelier_append_many`: one
-- statement, one transaction, one commit, each append still with its own expectation and its
-- own answer. An append that fails its expectation writes nothing and does not fail the
-- others; that is why the ordering guard no longer raises (which would abort the whole
-- transaction) but answers `guard`, and the store retries that append alone in a later
-- transaction, as before. Appends of one call share the transaction id, so their events share
-- the `commit` of their positions, ordered by `prepare` as a multi-event append's are.
--
-- `atelier_append_one` is `atelier_append` of 20261207000018_append_one_index_fewer.sql
-- (same results, documented in 20261123000001_event_store.sql) with the guard answered as
-- status `guard` (nothing written) instead of raised, and payloads as `json` (below).
-- `atelier_append` keeps its contract (it raises AT001) for tools that call it.
--
-- Events keep their payload as the JSON text written (`json`), not as `jsonb`.
--
-- The log is written once and read whole many times (catch-up, projections, the live feed,
-- rebuilds, export); nothing reads into a payload on a hot path. `jsonb` cost every append a
-- parse into its binary form and every read a conversion back to text: at 300 bytes of payload
-- that conversion was two thirds of the server's time for a page of `$all` (pgbench, 1,000
-- events: 6.0 ms with the payload, 2.0 ms without it). `json` is validated on write and sent
-- as it is on read. The operators' filters (`metadata->>'actor'`…) work on `json` as before.
-- A payload keeps its text exactly as the writer serialized it.
--
-- So the append functions take `json[]` instead of `jsonb[]`.

DROP FUNCTION atelier_append(text, smallint, bigint, uuid[], text[], jsonb[], jsonb[]);

ALTER TABLE events
    ALTER COLUMN data TYPE json USING data::json,
    ALTER COLUMN metadata TYPE json USING metadata::json;

CREATE FUNCTION atelier_append_one(
    p_stream   text,
    p_kind     smallint,
    p_expected bigint,
    p_ids      uuid[],
    p_types    text[],
    p_data     json[],
    p_meta     json[]
) RETURNS TABLE (status text, revision bigint, commit bigint, prepare bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_xid       bigint := pg_current_xact_id()::text::bigint;
    v_id        bigint;
    v_rev       bigint;
    v_last      bigint;
    v_deleted   boolean;
    v_tomb      boolean;
    v_tb        bigint;
    v_actual    bigint;
    v_n         int := cardinality(p_ids);
    v_found     uuid[];
    v_min       bigint;
    v_max       bigint;
    v_ok        boolean;
BEGIN
    -- Fast path: an `Exact` append to an existing stream at its current revision, the append
    -- every command makes. One UPDATE checks the expectation and the ordering guard and moves
    -- the revision; no row lock beforehand and no idempotency probe (nothing can sit at the
    -- expected place yet). Anything else falls through to the general path below.
    IF p_kind = 3 AND p_expected >= 0 THEN
        UPDATE event_streams s
           SET revision = s.revision + v_n, last_commit = v_xid
         WHERE s.stream_name = p_stream AND s.revision = p_expected AND NOT s.deleted
           AND NOT s.tombstoned AND s.last_commit <= v_xid
        RETURNING s.stream_id INTO v_id;
        IF FOUND THEN
            WITH ins AS (
                INSERT INTO events (commit, prepare, stream_id, stream_name, revision, event_id,
                                    event_type, data, metadata, created_at)
                SELECT v_xid, nextval('event_prepare_seq'), v_id, p_stream, p_expected + t.i,
                       t.id, t.ty, t.d, t.m, now()
                  FROM unnest(p_ids, p_types, p_data, p_meta)
                       WITH ORDINALITY AS t(id, ty, d, m, i)
                 ORDER BY t.i
                RETURNING events.prepare
            )
            SELECT max(ins.prepare) INTO v_max FROM ins;
            RETURN QUERY SELECT 'ok'::text, p_expected + v_n, v_xid, v_max;
            RETURN;
        END IF;
    END IF;

    LOOP
        SELECT s.stream_id, s.revision, s.last_commit, s.deleted, s.tombstoned, s.truncate_before
          INTO v_id, v_rev, v_last, v_deleted, v_tomb, v_tb
          FROM event_streams s WHERE s.stream_name = p_stream FOR UPDATE;
        EXIT WHEN FOUND;
        INSERT INTO event_streams (stream_name) VALUES (p_stream)
            ON CONFLICT (stream_name) DO NOTHING
            RETURNING event_streams.stream_id INTO v_id;
        IF FOUND THEN
            v_rev := -1; v_last := 0; v_deleted := false; v_tomb := false; v_tb := NULL;
            EXIT;
        END IF;
    END LOOP;

    IF v_tomb THEN
        RETURN QUERY SELECT 'deleted'::text, v_rev, 0::bigint, 0::bigint;
        RETURN;
    END IF;
    -- The ordering guard: a transaction with a higher id already appended to the stream.
    -- Nothing of this append is written; the caller retries it in a new transaction.
    IF v_last > v_xid THEN
        RETURN QUERY SELECT 'guard'::text, v_rev, 0::bigint, 0::bigint;
        RETURN;
    END IF;

    v_actual := CASE WHEN v_deleted THEN -1 ELSE v_rev END;

    -- Idempotency (KurrentDB's rules): the same ids at the same place are a retry. With
    -- `NoStream` and `Exact` the place is known: the events there are read by (stream,
    -- revision). With `Any` and `StreamExists` it is wherever the ids are: the stream is
    -- scanned (no application path appends that way; the import and operators' tools do).
    IF v_rev >= 0 THEN
        IF p_kind IN (1, 3) THEN
            v_min := CASE p_kind WHEN 1 THEN COALESCE(v_tb, 0) ELSE p_expected + 1 END;
            SELECT array_agg(e.event_id ORDER BY e.revision), min(e.revision), max(e.revision)
              INTO v_found, v_min, v_max
              FROM events e
             WHERE e.stream_id = v_id AND e.revision >= v_min AND e.revision < v_min + v_n;
            -- Other events at the place: not a retry; the expectation decides below.
            IF v_found IS DISTINCT FROM p_ids THEN
                v_found := NULL;
            END IF;
        ELSE
            SELECT array_agg(e.event_id ORDER BY e.revision), min(e.revision), max(e.revision)
              INTO v_found, v_min, v_max
              FROM events e WHERE e.stream_id = v_id AND e.event_id = ANY (p_ids);
        END IF;
        IF v_found IS NOT NULL THEN
            v_ok := v_found = p_ids AND v_max - v_min + 1 = v_n AND CASE p_kind
                WHEN 1 THEN v_min = COALESCE(v_tb, 0)
                WHEN 3 THEN v_min = p_expected + 1
                ELSE true END;
            IF v_ok THEN
                RETURN QUERY SELECT 'retry'::text, e.revision, e.commit, e.prepare
                    FROM events e WHERE e.stream_id = v_id AND e.revision = v_max;
            ELSE
                RETURN QUERY SELECT 'wrong'::text, v_actual, 0::bigint, 0::bigint;
            END IF;
            RETURN;
        END IF;
    END IF;

    v_ok := CASE p_kind
        WHEN 1 THEN v_actual = -1
        WHEN 2 THEN v_actual >= 0
        WHEN 3 THEN v_actual = p_expected
        ELSE true END;
    IF NOT v_ok THEN
        RETURN QUERY SELECT 'wrong'::text, v_actual, 0::bigint, 0::bigint;
        RETURN;
    END IF;

    WITH ins AS (
        INSERT INTO events (commit, prepare, stream_id, stream_name, revision, event_id,
                            event_type, data, metadata, created_at)
        SELECT v_xid, nextval('event_prepare_seq'), v_id, p_stream, v_rev + t.i, t.id, t.ty,
               t.d, t.m, now()
          FROM unnest(p_ids, p_types, p_data, p_meta) WITH ORDINALITY AS t(id, ty, d, m, i)
         ORDER BY t.i
        RETURNING events.prepare
    )
    SELECT max(ins.prepare) INTO v_max FROM ins;

    UPDATE event_streams SET revision = v_rev + v_n, last_commit = v_xid, deleted = false
     WHERE stream_id = v_id;

    RETURN QUERY SELECT 'ok'::text, v_rev + v_n, v_xid, v_max;
END;
$$;

CREATE FUNCTION atelier_append(
    p_stream   text,
    p_kind     smallint,
    p_expected bigint,
    p_ids      uuid[],
    p_types    text[],
    p_data     json[],
    p_meta     json[]
) RETURNS TABLE (status text, revision bigint, commit bigint, prepare bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM atelier_append_one(p_stream, p_kind, p_expected, p_ids, p_types,
                                            p_data, p_meta);
    IF r.status = 'guard' THEN
        RAISE EXCEPTION 'stream % was appended by a later transaction', p_stream
            USING ERRCODE = 'AT001';
    END IF;
    RETURN QUERY SELECT r.status, r.revision, r.commit, r.prepare;
END;
$$;

-- Several appends in one transaction, in the order given (the store sorts them by stream name,
-- so that two calls lock the stream rows they share in the same order and never deadlock).
-- Append i is stream p_streams[i] with expectation (p_kinds[i], p_expected[i]) and the next
-- p_counts[i] events of the flattened p_ids, p_types, p_data and p_meta. One row per append,
-- in the same order, as `atelier_append_one` answers it.
CREATE FUNCTION atelier_append_many(
    p_streams  text[],
    p_kinds    smallint[],
    p_expected bigint[],
    p_counts   int[],
    p_ids      uuid[],
    p_types    text[],
    p_data     json[],
    p_meta     json[]
) RETURNS TABLE (status text, revision bigint, commit bigint, prepare bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_from int := 1;
    v_to   int;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_streams), 0) LOOP
        v_to := v_from + p_counts[i] - 1;
        RETURN QUERY SELECT * FROM atelier_append_one(p_streams[i], p_kinds[i], p_expected[i],
            p_ids[v_from:v_to], p_types[v_from:v_to], p_data[v_from:v_to], p_meta[v_from:v_to]);
        v_from := v_to + 1;
    END LOOP;
END;
$$;
