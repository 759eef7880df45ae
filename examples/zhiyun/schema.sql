-- zhiyun's core tables, as far as a backup cares: customers talk in conversations made of
-- messages; agents answer from knowledge documents (whose vectors live in Qdrant) and
-- uploaded files (in MinIO). Every row records the transaction that wrote it (`xid`), which
-- lets a test tell exactly which rows a dump's snapshot could see.
CREATE TABLE customers (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    phone       text,
    channel     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    xid         bigint NOT NULL DEFAULT txid_current()
);
CREATE TABLE conversations (
    id            bigserial PRIMARY KEY,
    customer_id   bigint NOT NULL REFERENCES customers(id),
    title         text NOT NULL,
    status        text NOT NULL DEFAULT 'open',
    message_count integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE messages (
    id               bigserial PRIMARY KEY,
    conversation_id  bigint NOT NULL REFERENCES conversations(id),
    sender           text NOT NULL,
    body             text NOT NULL,
    attachment       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    xid              bigint NOT NULL DEFAULT txid_current()
);
CREATE INDEX messages_conversation ON messages(conversation_id);
CREATE TABLE knowledge_documents (
    id          bigserial PRIMARY KEY,
    title       text NOT NULL,
    content     text NOT NULL,
    vector_id   bigint NOT NULL UNIQUE,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
