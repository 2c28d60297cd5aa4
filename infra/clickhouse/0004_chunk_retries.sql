-- Chunks asked a second time because every card of their first answer was dropped
-- (CardsGenerated.retried): 1 for those, 0 for the rest and for rows written before.
ALTER TABLE {db}.chunks ADD COLUMN IF NOT EXISTS retried UInt8 DEFAULT 0;
