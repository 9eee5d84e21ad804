"""CT number conventions shared by every layer (readers, networks, the judge): one place for the HU window."""

HU_MIN = -1024.0  # air as stored by scanners (12-bit CT: 4096 values from -1024)
HU_MAX = 3071.0
HU_RANGE = (HU_MIN, HU_MAX)
