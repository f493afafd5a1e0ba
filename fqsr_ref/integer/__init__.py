"""integer"""
