"""The knowledge base: parsing uploaded files, chunking them, and (later) vector stores."""
