"""Vision-language OCR at compressed vision-token budgets: budgets, backends, confidence, guards."""
