-- The event store: streams, events, and the append function.
--
-- Positions are (commit, prepare): commit is the appending transaction's id (xid8, as bigint),
-- prepare a global sequence. `$all` is read in (commit, prepare) order and only below
-- pg_snapshot_xmin(pg_current_snapshot()), the oldest transaction still running: a reader never
-- moves past an event whose transaction may still commit with a lower commit number.

CREATE TABLE event_streams (
    stream_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_name     text NOT NULL UNIQUE,
    -- Revision of the last event ever written (-1: none), deleted or not.
    revision        bigint NOT NULL DEFAULT -1,
    -- Transaction id of the last append: the per-stream ordering guard.
    last_commit     bigint NOT NULL DEFAULT 0,
    deleted         boolean NOT NULL DEFAULT false,
    tombstoned      boolean NOT NULL DEFAULT false,
    max_age         bigint,
    max_count       bigint,
    truncate_before bigint
);

CREATE SEQUENCE event_prepare_seq AS bigint;

CREATE TABLE events (
    commit      bigint NOT NULL,
    prepare     bigint NOT NULL,
    stream_id   bigint NOT NULL,
    stream_name text NOT NULL,
    revision    bigint NOT NULL,
    event_id    uuid NOT NULL,
    event_type  text NOT NULL,
    data        jsonb NOT NULL,
    metadata    jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (commit, prepare),
    UNIQUE (stream_id, revision),
    UNIQUE (stream_id, event_id)
);

-- Appends a batch to a stream in the calling transaction.
-- p_kind: 0 any, 1 no stream, 2 stream exists, 3 exact (p_expected).
-- Returns (status, revision, commit, prepare):
--   'ok'          written; revision and position of the last event
--   'retry'       the same batch was already written there; its first result
--   'wrong'       the expectation failed; revision = the apparent actual revision (-1: none)
--   'deleted'     the stream is tombstoned
-- Raises SQLSTATE 'AT001' when a transaction with a higher id appended to the stream after this
-- one started: the caller retries in a new transaction, so revisions increase inside $all.
CREATE FUNCTION atelier_append(
    p_stream   text,
    p_kind     smallint,
    p_expected bigint,
    p_ids      uuid[],
    p_types    text[],
    p_data     jsonb[],
    p_meta     jsonb[]
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
    IF v_last > v_xid THEN
        RAISE EXCEPTION 'stream % was appended by a later transaction', p_stream
            USING ERRCODE = 'AT001';
    END IF;

    v_actual := CASE WHEN v_deleted THEN -1 ELSE v_rev END;

    -- Idempotency (KurrentDB's rules): the same ids at the same place are a retry.
    IF v_rev >= 0 THEN
        SELECT array_agg(e.event_id ORDER BY e.revision), min(e.revision), max(e.revision)
          INTO v_found, v_min, v_max
          FROM events e WHERE e.stream_id = v_id AND e.event_id = ANY (p_ids);
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
