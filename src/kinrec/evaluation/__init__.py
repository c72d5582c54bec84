"""Full-ranking evaluation with RecBole-equal metric definitions."""
