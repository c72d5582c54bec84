"""Knowledge sources: language-model item encoder and knowledge graph."""
