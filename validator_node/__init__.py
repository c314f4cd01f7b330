"""validator_node"""
