"""Peer strategies (SAI-DPO, DAPO, SEC, DUMP, MoPPS, CurES, ...) register on import."""
