"""Cards: prompts, the rules a card must pass, writing cards with the LLM, the result cache
and near-duplicate removal."""
